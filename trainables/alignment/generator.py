"""The ``faces3d`` generator: seeded 3D faces on real LFW textures, rendered with their UV position maps.

MONAS (``../shared/papers/monas-multipath-oneshot-nas-3d-face-alignment.txt``, §IV) regresses PRNet's UV
position map (every texel of a fixed face parameterisation holds the (x, y, z) of its 3D point in image
pixels) and scores 68 landmarks with the NME per yaw bin (:mod:`trainables.alignment.metrics`). Without a
network (DESIGN.md §4) the training data are generated here from real images that ship with scikit-image.

The generative model (``faces3d``), deterministic in ``seed``:

- **UV parameterisation.** Texel (row i, col j) of an S x S map has ``v = (i + .5) / S`` and
  ``u = (j + .5) / S``; its azimuth is ``theta = (2u - 1) * 80 deg`` (equal angles, so the sides of the face
  keep texels for profile views), its frontal coordinates are ``fx = sin(theta) / sin(80 deg)`` and
  ``fy = 2v - 1`` (both in [-1, 1]; x right, y down). The face region is the area inside the jaw contour of
  the landmark template below the ears and a flattened elliptic forehead cap above (:func:`_face_mask`).
- **Template and landmarks.** The iBUG-68 mean shape (jaw 17, brows 10, nose 9, eyes 12, mouth 20; the
  dlib / OpenFace template, mirror-symmetrised) placed in the (fx, fy) frame so that it lies on the
  features of the LFW crops; each landmark is the texel nearest its template point
  (``landmark_uv``; distinct texels, nudged to a free neighbour where two would share one).
- **Geometry.** A point of the surface is ``X = w(fy) * fx'``, ``Y = height * fy'``,
  ``Z = depth * cos(theta) - 0.2 fy^2 + bumps`` (model units, face half-height 1, the head's vertical axis
  at X = Z = 0): a half-elliptic cylinder narrowing to the chin, with Gaussian bumps for the nose ridge
  and tip, nostril wings, brow ridge, eye sockets, cheek bones, lips and chin. Identity = 8 coefficients
  (width, height, depth, nose protrusion, mid-face shift, jaw taper, eye spacing, forehead slope);
  expression = 3 (jaw drop / mouth open, smile, brow raise). ``fx', fy'`` are fx, fy after the
  in-plane warps of eye spacing, mid-face shift and expression.
- **Pose and projection.** Yaw stratified uniform on [-90, 90] degrees (every split covers the three
  AFLW2000-3D bins evenly), pitch U(-20, 20), roll U(-15, 15); rotation ``R = Rz(roll) Ry(yaw) Rx(pitch)``
  about the head axis; orthographic (weak perspective, as 300W-LP) projection, scaled so that the
  landmark box's longer side fills 55-72% of the image (a 1.4-1.8x enlarged box, as the loader's crop) and
  centred with a +-5% jitter. Positive yaw turns the face towards the image's right (+x).
- **Appearance.** The texture is one of the 100 LFW faces of ``skimage.data.lfw_subset()`` (25x25
  grayscale crops) resampled onto the UV grid (crop coordinates = ``((fx + 1) / 2, (fy + 1) / 2)``),
  randomly mirrored, tinted with a random skin tone; Lambertian shading with a random light direction and
  ambient term; an open mouth darkens the gap between the lips.
- **Rendering.** The surface is evaluated on a UV grid twice as fine as the map, and its texels are
  splatted into the image with a z-buffer (vectorised numpy, nearest pixel, larger z wins) over a random
  crop of a real scikit-image sample photograph (14 photographs at three scales, mirrored at random; the
  astronaut is left out because it holds a face). Behind the face mask the back of the head, an
  ellipsoid, is painted as hair (a random hair colour times a crop of the ``grass`` photograph), so that
  profiles look like heads rather than floating masks; it is not part of the UV map. Then optional
  Gaussian blur and noise. The model is linear in its coefficients over fixed basis fields of
  (theta, fx, fy), so a chunk of 64 faces is a few small matrix products (:func:`_surface`).
- **Targets.** ``uv_maps`` hold the projected (x, y) in pixels (pixel centres at integers) and
  ``z = scale * Z`` (pixels in front of the head axis, larger = closer) for every face texel and 0
  elsewhere; all texels are kept, self-occluded ones too (as PRNet). ``landmarks`` are ``uv_maps`` at
  ``landmark_uv``. ``uv_weights`` = 16 at the 68 landmark texels, 4 in the eye, nose and mouth regions,
  3 elsewhere on the face, 0 outside (PRNet's 16:4:3:0 mask, DESIGN.md §1).
- **Splits.** Train, val and test are drawn from distinct seeds and from disjoint LFW faces (60 / 15 / 25
  of the 100; ``lfw_subset`` carries no identity labels, so "disjoint" means disjoint images).

It returns :mod:`trainables.alignment.data`'s values; the real format is read by
:mod:`trainables.alignment.formats`, and the ``aflw2000`` dataset takes its train and val splits from here.
Every problem with the input raises :class:`~trainables.checks.DatasetError` with a one-line message.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from search_algos.spaces.base import stable_key
from trainables.alignment.data import NUM_LANDMARKS, AlignmentDataset, AlignmentSplit, _check_generator_arguments
from trainables.faces import lfw_faces, sample_photograph

__all__ = ["make_faces3d"]

# Bump when the generative model or the loader's preprocessing changes, so that old dataset_ids (and the
# benchmark rows keyed by them) are not mistaken for the new data.
_GENERATOR_VERSION = 1
_THETA_MAX = math.radians(80.0)  # azimuth of the UV map's left/right edges
_RENDER_FACTOR = 2  # render grid = 2x the UV map per side: about 2 samples per pixel, no holes
_CHUNK = 64  # images rendered together; fixed, because the noise of a chunk is drawn from its own seed
_FILL_RANGE = (0.55, 0.72)  # generator: longer landmark-box side / image side (1 / 1.8 .. 1 / 1.4)
_SPLIT_FACES = {"train": (0, 60), "val": (60, 75), "test": (75, 100)}  # slices of a seeded permutation
# Random streams: numpy.random.default_rng([seed, SALT, ...]) with the dataset's seed first.
_SPLIT_FACES_SALT = 99  # the permutation of the 100 LFW faces that _SPLIT_FACES cuts into the splits' textures
# A split's salt: its sample parameters draw from [seed, salt], the noise of the chunk of rows from r on from
# [seed, salt, r]. SeedSequence pads entropy with zero words, so chunk 0's noise stream is the parameters'
# stream; kept, because another stream would change every faces3d image (and need a _GENERATOR_VERSION bump).
_SPLIT_SALTS = {"train": 0, "val": 1, "test": 2}
_BACKGROUND_PHOTOS = (
    "camera", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "coins", "moon", "page",
    "clock", "text", "hubble_deep_field", "immunohistochemistry",
)  # fmt: skip
_BACKGROUND_SCALES = (1.25, 2.0, 3.2)  # shorter side of a photograph / image_size

# --------------------------------------------------------------------------------------------------
# The landmark template and the UV parameterisation
# --------------------------------------------------------------------------------------------------

# iBUG-68 mean shape in its landmark box (x right, y down; the dlib / OpenFace alignment template).
_TEMPLATE_BOX = np.array([
    (0.0792, 0.3392), (0.0829, 0.4570), (0.0968, 0.5756), (0.1221, 0.6919), (0.1687, 0.8003),
    (0.2398, 0.8957), (0.3257, 0.9771), (0.4223, 1.0433), (0.5318, 1.0608), (0.6413, 1.0398),
    (0.7381, 0.9723), (0.8244, 0.8896), (0.8948, 0.7925), (0.9394, 0.6815), (0.9611, 0.5622),
    (0.9706, 0.4418), (0.9712, 0.3221),  # jaw 0-16
    (0.1638, 0.2492), (0.2178, 0.2043), (0.2913, 0.1924), (0.3675, 0.2036), (0.4393, 0.2331),
    (0.5864, 0.2281), (0.6602, 0.1959), (0.7375, 0.1824), (0.8132, 0.1928), (0.8708, 0.2353),  # brows
    (0.5153, 0.3186), (0.5162, 0.3962), (0.5171, 0.4738), (0.5182, 0.5532),  # nose bridge 27-30
    (0.4337, 0.6041), (0.4755, 0.6208), (0.5207, 0.6343), (0.5659, 0.6188), (0.6071, 0.6016),  # nostrils
    (0.2524, 0.3311), (0.2987, 0.3026), (0.3557, 0.3030), (0.4037, 0.3387), (0.3525, 0.3500),
    (0.2968, 0.3505),  # right eye (image left) 36-41
    (0.6313, 0.3341), (0.6791, 0.2965), (0.7360, 0.2947), (0.7829, 0.3213), (0.7403, 0.3418),
    (0.6850, 0.3437),  # left eye 42-47
    (0.3532, 0.7462), (0.4146, 0.7191), (0.4777, 0.7068), (0.5227, 0.7171), (0.5698, 0.7054),
    (0.6352, 0.7157), (0.6995, 0.7394), (0.6394, 0.8052), (0.5764, 0.8354), (0.5254, 0.8417),
    (0.4764, 0.8375), (0.4138, 0.8100),  # outer lips 48-59
    (0.3801, 0.7500), (0.4780, 0.7451), (0.5234, 0.7489), (0.5711, 0.7433), (0.6724, 0.7442),
    (0.5725, 0.7766), (0.5240, 0.7834), (0.4776, 0.7785),  # inner lips 60-67
])  # fmt: skip

# Index of each landmark's mirror image (left <-> right) in the iBUG-68 numbering.
_MIRROR = np.array(
    [*range(16, -1, -1), *range(26, 16, -1), 27, 28, 29, 30, 35, 34, 33, 32, 31,
     45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
     54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)  # fmt: skip
_JAW, _BROWS, _NOSE = np.arange(0, 17), np.arange(17, 27), np.arange(27, 36)
_EYES = (np.arange(36, 42), np.arange(42, 48))
_MOUTH_OUTER, _MOUTH_INNER = np.arange(48, 60), np.arange(60, 68)


def _template_face() -> np.ndarray:
    """(68, 2) template landmarks in the (fx, fy) frame, mirror-symmetric about fx = 0.

    The box -> frame map puts the template on the features of the LFW crops (checked on their mean
    face): crop x = 0.5 + 0.95 (bx - 0.5), crop y = 0.10 + 0.82 by, and frame = 2 * crop - 1.
    """
    frame = np.stack(
        [(_TEMPLATE_BOX[:, 0] - 0.5) * 1.9, 2.0 * (0.10 + 0.82 * _TEMPLATE_BOX[:, 1]) - 1.0], axis=1
    )
    mirrored = frame[_MIRROR] * np.array([-1.0, 1.0])
    return (frame + mirrored) / 2.0


_TEMPLATE = _template_face()  # (68, 2) (fx, fy)
_EYE_X = float(np.abs(_TEMPLATE[36:48, 0]).mean())
_EYE_Y = float(_TEMPLATE[36:48, 1].mean())
_BROW_Y = float(_TEMPLATE[_BROWS, 1].mean())
_NOSE_TOP, _NOSE_TIP = float(_TEMPLATE[27, 1]), float(_TEMPLATE[30, 1])
_ALAR_X, _ALAR_Y = float(abs(_TEMPLATE[31, 0])), float(_TEMPLATE[31, 1])
_MOUTH_Y = float(_TEMPLATE[_MOUTH_INNER, 1].mean())
_MOUTH_HW = float(abs(_TEMPLATE[48, 0]))


def _fx_from_theta(theta: np.ndarray) -> np.ndarray:
    return np.sin(theta) / math.sin(_THETA_MAX)


def _uv_frame(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(theta, fx, fy) of the texel centres of a size x size UV grid, each (size, size)."""
    centres = (np.arange(size) + 0.5) / size  # (S,)
    theta = np.broadcast_to((2.0 * centres - 1.0) * _THETA_MAX, (size, size))  # varies along columns
    fy = np.broadcast_to((2.0 * centres - 1.0)[:, None], (size, size))  # varies along rows
    return theta, _fx_from_theta(theta), fy


def _face_mask(fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    """Inside the template's jaw contour below the ears, a flattened elliptic cap above."""
    jaw = _TEMPLATE[8:17]  # chin -> right ear; fy decreases, fx increases
    fy_ear, hw_ear = float(jaw[-1, 1]), float(jaw[-1, 0])
    # Half-width down to the chin, dilated along fy so that the flat chin keeps its landmarks inside.
    below = np.maximum.reduce(
        [np.interp(fy + d, jaw[::-1, 1], jaw[::-1, 0], right=0.0) for d in (-0.04, 0.0, 0.04)]
    )
    cap = hw_ear * np.sqrt(np.clip(1.0 - ((fy - fy_ear) / (fy_ear + 1.15)) ** 2, 0.0, None))
    half_width = np.where(fy < fy_ear, cap, below) * 1.03 + 0.03
    return (np.abs(fx) <= half_width) & (fy <= float(jaw[0, 1]) + 0.05)


def _continuous_uv(points: np.ndarray, size: int) -> np.ndarray:
    """(K, 2) (fx, fy) -> (K, 2) continuous (row, col) texel coordinates (centres at integers)."""
    theta = np.arcsin(np.clip(points[:, 0] * math.sin(_THETA_MAX), -1.0, 1.0))
    col = (theta / _THETA_MAX + 1.0) / 2.0 * size - 0.5
    row = (points[:, 1] + 1.0) / 2.0 * size - 0.5
    return np.stack([row, col], axis=1)


@functools.lru_cache(maxsize=8)
def _uv_layout(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(face mask (S, S) bool, landmark_uv (68, 2) int64, uv_weights (S, S) float32) of a UV size."""
    from skimage.draw import polygon

    _, fx, fy = _uv_frame(size)
    mask = _face_mask(fx, fy)
    exact = _continuous_uv(_TEMPLATE, size)  # (68, 2)
    taken: set[tuple[int, int]] = set()
    landmark_uv = np.empty((NUM_LANDMARKS, 2), dtype=np.int64)
    for k, (row, col) in enumerate(exact):
        landmark_uv[k] = _free_texel(row, col, size, taken)
        taken.add((int(landmark_uv[k, 0]), int(landmark_uv[k, 1])))
    mask[landmark_uv[:, 0], landmark_uv[:, 1]] = True  # a nudged landmark may fall just outside (S < 24)

    weights = np.where(mask, 3.0, 0.0).astype(np.float32)
    regions = [(_EYES[0], 1.8), (_EYES[1], 1.8), (_NOSE, 1.3), (_MOUTH_OUTER, 1.3)]
    for members, grow in regions:  # each region: its landmarks' polygon, grown about the centroid
        pts = exact[members]
        centre = pts.mean(axis=0)
        grown = centre + (pts - centre) * grow
        hull = grown[_convex_order(grown)]
        rr, cc = polygon(hull[:, 0], hull[:, 1], shape=(size, size))
        weights[rr, cc] = np.where(mask[rr, cc], 4.0, weights[rr, cc])
    weights[landmark_uv[:, 0], landmark_uv[:, 1]] = 16.0
    for array in (mask, landmark_uv, weights):
        array.setflags(write=False)
    return mask, landmark_uv, weights


def _free_texel(row: float, col: float, size: int, taken: set[tuple[int, int]]) -> tuple[int, int]:
    """The nearest texel to (row, col) that no earlier landmark holds (ties: row-major order)."""
    r0, c0 = int(round(row)), int(round(col))
    for radius in range(size):
        candidates = [
            (r, c)
            for r in range(r0 - radius, r0 + radius + 1)
            for c in range(c0 - radius, c0 + radius + 1)
            if 0 <= r < size and 0 <= c < size and (r, c) not in taken
        ]
        if candidates:
            return min(candidates, key=lambda rc: ((rc[0] - row) ** 2 + (rc[1] - col) ** 2, rc))
    raise ValueError(f"no free texel left for a landmark in a {size}x{size} UV map")


def _convex_order(points: np.ndarray) -> np.ndarray:
    """Indices of ``points`` sorted by angle around their centroid (a simple polygon for convex sets)."""
    d = points - points.mean(axis=0)
    return np.argsort(np.arctan2(d[:, 0], d[:, 1]))


# --------------------------------------------------------------------------------------------------
# Geometry: a linear model over fixed UV basis fields
# --------------------------------------------------------------------------------------------------

# name -> (low, high) of the uniform prior of each identity / expression coefficient.
_SHAPE_PRIORS: dict[str, tuple[float, float]] = {
    "width": (0.74, 0.92),  # half-width of the head / face half-height
    "height": (0.92, 1.08),
    "depth": (0.80, 1.00),  # face surface in front of the head axis
    "nose": (0.16, 0.32),  # nose-tip protrusion
    "midface": (-0.07, 0.07),  # moves eyes, nose and mouth up or down between forehead and chin
    "jaw": (0.10, 0.45),  # narrowing of the head towards the chin
    "eyes": (-0.04, 0.04),  # eye spacing
    "forehead": (0.0, 0.25),  # backward slope of the forehead
    "mouth_open": (0.0, 0.12),
    "smile": (-0.03, 0.05),
    "brows": (-0.03, 0.05),
}
# The surface (module docstring) is  X = width * (1 - jaw * taper) * (A . fields_x),
# Y = height * (B . fields_y),  Z = C . fields_z,  with coefficient vectors A = (1, eyes, smile),
# B = (1, midface, mouth_open, smile, brows), C = (depth, 1, forehead, nose, mouth_open): linear in fixed
# fields of (theta, fx, fy), so a batch is a few small matrix products (and so are its derivatives).
_FIELDS_X = ("fx", "eye_spacing", "smile_x")
_FIELDS_Y = ("fy", "midface", "jaw_drop", "smile_y", "brow_raise")
_FIELDS_Z = ("cylinder", "template", "forehead", "nose", "jaw_back")


def _gauss(t: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * t * t)


def _fields(theta: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> dict[str, np.ndarray]:
    """The basis fields of the surface model on texels with azimuth ``theta`` and frame (fx, fy)."""
    ax = np.abs(fx)
    jaw_region = 1.0 / (1.0 + np.exp(-(fy - _MOUTH_Y) / 0.03)) * _gauss(fx / 0.5)  # below the lips
    corners = _gauss((ax - _MOUTH_HW) / 0.08) * _gauss((fy - _MOUTH_Y) / 0.07)
    tip = np.clip((fy - _NOSE_TOP) / (_NOSE_TIP - _NOSE_TOP), 0.0, 1.0)  # 0 at the bridge, 1 at the tip
    ridge = np.where(fy <= _NOSE_TIP, tip**1.5, _gauss((fy - _NOSE_TIP) / 0.06))
    alar = _gauss((ax - _ALAR_X) / 0.06) * _gauss((fy - _ALAR_Y) / 0.05)
    template = (
        -0.2 * fy * fy  # forehead and chin recede
        + 0.05 * _gauss((ax - _EYE_X) / 0.2) * _gauss((fy - _BROW_Y) / 0.07)  # brow ridge
        - 0.09 * _gauss((ax - _EYE_X) / 0.14) * _gauss((fy - _EYE_Y) / 0.09)  # eye sockets
        + 0.03 * _gauss((ax - _EYE_X) / 0.07) * _gauss((fy - _EYE_Y) / 0.04)  # eyeballs
        + 0.05 * _gauss((ax - 0.5) / 0.18) * _gauss((fy - 0.05) / 0.2)  # cheek bones
        + 0.05 * _gauss(fx / 0.22) * _gauss((fy - _MOUTH_Y) / 0.08)  # lips
        + 0.05 * _gauss(fx / 0.22) * _gauss((fy - 0.82) / 0.1)  # chin
    )
    return {
        "fx": fx,
        "eye_spacing": (fx / _EYE_X) * _gauss(fx / 0.5) * _gauss((fy - _EYE_Y) / 0.2),
        "smile_x": 0.6 * np.sign(fx) * corners,
        "taper": np.clip(fy - 0.15, 0.0, None) ** 2 / 0.7225,  # 1 at the chin
        "fy": fy,
        "midface": 0.5 * (1.0 - fy * fy),
        "jaw_drop": jaw_region,
        "smile_y": -corners,
        "brow_raise": -_gauss((ax - _EYE_X) / 0.18) * _gauss((fy - _BROW_Y) / 0.07),
        "cylinder": np.cos(theta),
        "template": template,
        "forehead": -np.clip(-fy - 0.2, 0.0, None) ** 2,
        "nose": ridge * _gauss(fx / (0.08 + 0.08 * tip)) + 0.3 * alar,
        "jaw_back": -0.5 * jaw_region,
    }


@dataclass(frozen=True)
class _Basis:
    """Basis fields at K texels of a grid, and their finite differences along u (cols) and v (rows).

    Each array is (F, K) float32, F = the number of fields of that coordinate.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    taper: np.ndarray  # (1, K)
    du: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # d/du of (x, y, z, taper)
    dv: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@functools.lru_cache(maxsize=8)
def _basis(grid: int, masked: bool) -> _Basis:
    """The basis of a grid x grid UV grid, at its face texels (``masked``) or at all texels."""
    theta, fx, fy = _uv_frame(grid)
    fields = _fields(theta, fx, fy)
    keep = _face_mask(fx, fy) if masked else np.ones((grid, grid), dtype=bool)

    def pack(names: tuple[str, ...], view: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return np.stack([view(fields[name])[keep] for name in names]).astype(np.float32)

    groups = (_FIELDS_X, _FIELDS_Y, _FIELDS_Z, ("taper",))
    values = [pack(g, lambda f: f) for g in groups]
    du = tuple(pack(g, lambda f: np.gradient(f, axis=1)) for g in groups)
    dv = tuple(pack(g, lambda f: np.gradient(f, axis=0)) for g in groups)
    return _Basis(*values, du=du, dv=dv)  # type: ignore[arg-type]


def _coefficients(shape: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, 3), (B, 5), (B, 5) float32 coefficient vectors A, B, C of the X, Y, Z fields."""
    one = np.ones_like(shape["width"])
    a = np.stack([one, shape["eyes"], shape["smile"]], axis=1)
    b = np.stack([one, shape["midface"], shape["mouth_open"], shape["smile"], shape["brows"]], axis=1)
    c = np.stack([shape["depth"], one, shape["forehead"], shape["nose"], shape["mouth_open"]], axis=1)
    return a.astype(np.float32), b.astype(np.float32), c.astype(np.float32)


_Components = tuple[np.ndarray, np.ndarray, np.ndarray]  # x, y, z, each (B, K)


def _surface(shape: dict[str, np.ndarray], basis: _Basis) -> tuple[_Components, _Components]:
    """Model-space points and unit normals at the basis texels (X right, Y down, Z towards the camera).

    Returns:
        ((X, Y, Z), (NX, NY, NZ)), each (B, K) float32.
    """
    a, b, c = _coefficients(shape)
    width, jaw, height = (shape[k][:, None].astype(np.float32) for k in ("width", "jaw", "height"))
    x_lin = a @ basis.x  # (B, K)
    half_width = width * (1.0 - jaw * basis.taper)
    points = (half_width * x_lin, height * (b @ basis.y), c @ basis.z)

    def tangent(d: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> _Components:
        dx = half_width * (a @ d[0]) - width * jaw * d[3] * x_lin  # product rule on the taper
        return dx, height * (b @ d[1]), c @ d[2]

    (ux, uy, uz), (vx, vy, vz) = tangent(basis.du), tangent(basis.dv)
    nx, ny, nz = uy * vz - uz * vy, uz * vx - ux * vz, ux * vy - uy * vx  # du x dv: +Z when frontal
    length = np.sqrt(nx * nx + ny * ny + nz * nz) + np.float32(1e-12)
    return points, (nx / length, ny / length, nz / length)


def _rotation(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """(B,) angles in degrees -> (B, 3, 3) ``Rz(roll) @ Ry(yaw) @ Rx(pitch)``; +yaw moves the nose to +x."""
    a, b, g = (np.radians(v.astype(np.float64)) for v in (yaw, pitch, roll))
    one, zero = np.ones_like(a), np.zeros_like(a)
    ry = np.stack([np.cos(a), zero, np.sin(a), zero, one, zero, -np.sin(a), zero, np.cos(a)], -1)
    rx = np.stack([one, zero, zero, zero, np.cos(b), -np.sin(b), zero, np.sin(b), np.cos(b)], -1)
    rz = np.stack([np.cos(g), -np.sin(g), zero, np.sin(g), np.cos(g), zero, zero, zero, one], -1)
    ry, rx, rz = (m.reshape(-1, 3, 3) for m in (ry, rx, rz))
    return rz @ ry @ rx


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Params:
    """Everything random about the N samples of one split, drawn up front (rendering is then pure)."""

    shape: dict[str, np.ndarray]  # name -> (N,)
    yaw: np.ndarray  # (N,) degrees
    pitch: np.ndarray
    roll: np.ndarray
    fill: np.ndarray  # (N,) longer landmark-box side / image side
    shift: np.ndarray  # (N, 2) centre jitter / image side
    texture: np.ndarray  # (N,) int64 index into the LFW textures (100.. are the mirrored copies)
    tint: np.ndarray  # (N, 3) RGB skin tone
    hair: np.ndarray  # (N, 3) RGB hair colour
    ambient: np.ndarray  # (N,)
    light: np.ndarray  # (N, 3) unit light direction (camera frame, z towards the camera)
    background: np.ndarray  # (N,) int64 index into the background photographs
    crop: np.ndarray  # (N, 2) crop offset fractions of the background
    hair_crop: np.ndarray  # (N, 2) crop offset fractions of the hair texture
    bg_flip: np.ndarray  # (N,) bool
    bg_gain: np.ndarray  # (N,)
    blur: np.ndarray  # (N,) Gaussian sigma in pixels, 0 = none
    noise: np.ndarray  # (N,) noise std on [0, 1]


def _sample_params(rng: np.random.Generator, n: int, faces: np.ndarray, n_backgrounds: int) -> _Params:
    shape = {name: rng.uniform(low, high, n) for name, (low, high) in _SHAPE_PRIORS.items()}
    strata = (rng.permutation(n) + rng.random(n)) / n  # stratified uniform on [0, 1)
    tone = rng.random((n, 1))  # light -> dark-brown hue; the LFW texture carries the brightness
    tint = np.concatenate([np.ones((n, 1)), 0.86 - 0.10 * tone, 0.74 - 0.16 * tone], axis=1)
    tint = tint * rng.uniform(0.85, 1.2, (n, 1))
    hair_tone = rng.random((n, 1))  # black -> brown -> blond
    hair = np.concatenate([0.08 + 0.55 * hair_tone, 0.07 + 0.42 * hair_tone, 0.06 + 0.25 * hair_tone], 1)
    azimuth, elevation = np.radians(rng.uniform(-60, 60, n)), np.radians(rng.uniform(-40, 40, n))
    light = np.stack(
        [np.sin(azimuth) * np.cos(elevation), -np.sin(elevation), np.cos(azimuth) * np.cos(elevation)],
        axis=1,
    )
    blurred = rng.random(n) < 0.4
    return _Params(
        shape=shape,
        yaw=-90.0 + 180.0 * strata,
        pitch=rng.uniform(-20.0, 20.0, n),
        roll=rng.uniform(-15.0, 15.0, n),
        fill=rng.uniform(*_FILL_RANGE, n),
        shift=rng.uniform(-0.05, 0.05, (n, 2)),
        texture=rng.choice(faces, n) + 100 * rng.integers(0, 2, n),
        tint=tint,
        hair=hair,
        ambient=rng.uniform(0.35, 0.7, n),
        light=light,
        background=rng.integers(0, n_backgrounds, n),
        crop=rng.random((n, 2)),
        hair_crop=rng.random((n, 2)),
        bg_flip=rng.random(n) < 0.5,
        bg_gain=rng.uniform(0.6, 1.15, n),
        blur=np.where(blurred, rng.uniform(0.3, 0.9, n), 0.0),
        noise=rng.uniform(0.0, 0.03, n),
    )


def _take(params: _Params, rows: slice) -> _Params:
    values = {name: getattr(params, name)[rows] for name in _Params.__dataclass_fields__ if name != "shape"}
    return _Params(shape={k: v[rows] for k, v in params.shape.items()}, **values)


# --------------------------------------------------------------------------------------------------
# Real images used by the generator
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _lfw_textures(grid: int) -> np.ndarray:
    """(200, K) float32 LFW faces sampled at the K face texels of a grid x grid UV grid.

    Rows 100..199 are the mirrored faces (the grid is symmetric in fx, so mirroring = reversing columns).
    """
    from scipy.ndimage import map_coordinates

    faces = lfw_faces()  # (100, 25, 25) float64
    _, fx, fy = _uv_frame(grid)
    keep = _face_mask(fx, fy)
    side = faces.shape[1]
    rows, cols = (fy + 1.0) / 2.0 * side - 0.5, (fx + 1.0) / 2.0 * side - 0.5
    full = np.stack([map_coordinates(face, [rows, cols], order=1, mode="nearest") for face in faces])
    textures = np.concatenate([full[:, keep], full[:, :, ::-1][:, keep]]).astype(np.float32)
    textures.setflags(write=False)
    return textures


@functools.lru_cache(maxsize=4)
def _backgrounds(size: int) -> tuple[np.ndarray, ...]:
    """Real photographs as (3, h, w) float32 on [0, 1], each at three scales (shorter side >= size)."""
    from skimage.transform import rescale

    photos: list[np.ndarray] = []
    for name in _BACKGROUND_PHOTOS:
        image = sample_photograph(name)
        for factor in _BACKGROUND_SCALES:
            shorter = int(math.ceil(factor * size))
            block = max(1, min(image.shape[:2]) // shorter)  # cheap integer block mean first
            h, w = (image.shape[0] // block) * block, (image.shape[1] // block) * block
            small = image[:h, :w].reshape(h // block, block, w // block, block, 3).mean(axis=(1, 3))
            scale = shorter / min(small.shape[:2])
            scaled = rescale(small, scale, channel_axis=2, anti_aliasing=scale < 1, order=1)
            photos.append(np.ascontiguousarray(scaled.transpose(2, 0, 1), dtype=np.float32))
    return tuple(photos)


@functools.lru_cache(maxsize=4)
def _mouth_gap(grid: int) -> np.ndarray:
    """(K,) float32 weight of the lip line at the face texels (darkened when the mouth opens)."""
    _, fx, fy = _uv_frame(grid)
    return (_gauss(fx / 0.2) * _gauss((fy - _MOUTH_Y) / 0.02))[_face_mask(fx, fy)].astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Placement:
    """Model -> image: ``p_img = scale * R p + offset`` (x, y in pixels; z = scale * rotated Z)."""

    rotation: np.ndarray  # (B, 3, 3)
    scale: np.ndarray  # (B,)
    offset: np.ndarray  # (B, 3), offset z = 0

    def rotate(self, p: _Components) -> _Components:
        """Rotate (B, K) components (the products are broadcast per sample: faster than matmul)."""
        r = self.rotation.astype(p[0].dtype)[:, :, :, None]  # (B, 3, 3, 1)
        x, y, z = (r[:, i, 0] * p[0] + r[:, i, 1] * p[1] + r[:, i, 2] * p[2] for i in range(3))
        return x, y, z

    def points(self, p: _Components) -> _Components:
        scale, offset = self.scale.astype(p[0].dtype)[:, None], self.offset.astype(p[0].dtype)
        x, y, z = (q * scale + offset[:, i, None] for i, q in enumerate(self.rotate(p)))
        return x, y, z


def _place(landmarks: np.ndarray, params: _Params, size: int) -> _Placement:
    """Rotate, then scale and centre so that the landmark box's longer side is ``fill * size``."""
    rot = _rotation(params.yaw, params.pitch, params.roll)  # (B, 3, 3)
    lm = landmarks.astype(np.float64) @ rot.transpose(0, 2, 1)  # (B, 68, 3)
    low, high = lm[:, :, :2].min(axis=1), lm[:, :, :2].max(axis=1)  # (B, 2)
    scale = params.fill * size / (high - low).max(axis=1)  # (B,) pixels per model unit
    centre = (size - 1) / 2.0 + params.shift * size  # (B, 2)
    offset = np.concatenate([centre - scale[:, None] * (low + high) / 2.0, np.zeros((len(scale), 1))], 1)
    return _Placement(rotation=rot, scale=scale, offset=offset)


def _render_chunk(
    params: _Params, size: int, noise_rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render one chunk of B samples.

    Returns:
        images (B, 3, S, S) float32 on [0, 1], uv_maps (B, 3, S, S) float32, landmarks (B, 68, 3)
        float32 (= uv_maps at landmark_uv), face coverage (B, S, S) bool (pixels the face was drawn on).
    """
    n = len(params.yaw)
    mask, landmark_uv, _ = _uv_layout(size)
    flat_landmarks = landmark_uv[:, 0] * size + landmark_uv[:, 1]  # (68,)

    # Targets: the surface at every texel of the S x S UV map, placed in the image (float64).
    coarse = tuple(c.astype(np.float64) for c in _surface(params.shape, _basis(size, masked=False))[0])
    placement = _place(np.stack([c[:, flat_landmarks] for c in coarse], axis=-1), params, size)
    uv = np.stack(placement.points(coarse), axis=1).reshape(n, 3, size, size)  # (B, 3, S, S)
    uv = (uv * mask).astype(np.float32)
    landmarks = uv.reshape(n, 3, -1)[:, :, flat_landmarks].transpose(0, 2, 1)  # (B, 68, 3)

    # Appearance of the face texels of the fine render grid (float32).
    grid = _RENDER_FACTOR * size
    fine, normal = _surface(params.shape, _basis(grid, masked=True))  # (B, K) components
    x, y, z = placement.points(fine)
    nx, ny, nz = placement.rotate(normal)
    light = params.light.astype(np.float32)
    lambert = np.clip(nx * light[:, :1] + ny * light[:, 1:2] + nz * light[:, 2:], 0.0, None)
    ambient = params.ambient.astype(np.float32)[:, None]
    gap = np.clip(params.shape["mouth_open"] / 0.12, 0.0, 1.0).astype(np.float32)[:, None]
    texture = _lfw_textures(grid)[params.texture] * (1.0 - 0.75 * gap * _mouth_gap(grid))  # (B, K)
    gray = texture * (ambient + (1.0 - ambient) * np.float32(1.15) * lambert)

    canvas = _background_chunk(params, size).transpose(0, 2, 3, 1).copy()  # (B, S, S, 3)
    _paint_skull(canvas, params, placement)
    coverage = _splat(canvas, (x, y, z), gray, params.tint)
    images = _degrade(canvas.transpose(0, 3, 1, 2), params, noise_rng)  # (B, 3, S, S)
    return images, uv, landmarks, coverage


def _splat(canvas: np.ndarray, points: _Components, gray: np.ndarray, tint: np.ndarray) -> np.ndarray:
    """Z-buffered splatting in place: each point colours its nearest pixel, the largest z wins.

    Args:
        canvas: (B, S, S, 3) images, painted in place.
        points: x, y in pixels and z (larger = closer), each (B, K).
        gray: (B, K) shaded intensity of each point.
        tint: (B, 3) RGB multiplier of each sample.

    Returns:
        (B, S, S) bool: the pixels that received a point.
    """
    n, size = canvas.shape[0], canvas.shape[1]
    col, row = np.rint(points[0]).astype(np.int64), np.rint(points[1]).astype(np.int64)
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    n_pixels = n * size * size
    key = (np.arange(n)[:, None] * size + row) * size + col  # flat pixel over the chunk
    key = np.where(inside, key, n_pixels).ravel()  # off-image points go to a spare slot
    depth = points[2].ravel()
    zbuffer = np.full(n_pixels + 1, -np.inf, dtype=depth.dtype)
    np.maximum.at(zbuffer, key, depth)
    winner = np.flatnonzero((depth >= zbuffer[key]) & (key < n_pixels))  # ties: the last one written
    pixel, sample = key[winner], winner // gray.shape[1]
    canvas.reshape(-1, 3)[pixel] = gray.ravel()[winner, None] * tint[sample]
    return np.isfinite(zbuffer[:n_pixels]).reshape(n, size, size)


def _paint_skull(canvas: np.ndarray, params: _Params, placement: _Placement) -> None:
    """Paint the back of the head (an ellipsoid behind the face mask) as hair, in place.

    The face mask is always drawn over it; the ellipsoid's orthographic silhouette is where the
    quadratic in z along a pixel's ray has a real root.
    """
    n, size = canvas.shape[0], canvas.shape[1]
    centre = np.stack(
        [np.zeros(n), np.full(n, -0.3), np.full(n, -0.25)], axis=1
    )  # (B, 3) model space
    radii = np.stack(
        [0.92 * params.shape["width"], params.shape["height"], 0.95 * params.shape["depth"] + 0.05], axis=1
    )
    centre_px = np.stack(placement.points(tuple(centre[:, i, None] for i in range(3))), axis=1)[:, :, 0]
    rot, scale = placement.rotation, placement.scale[:, None, None]
    quad = rot @ (np.eye(3)[None] / (radii[:, :, None] * scale) ** 2) @ rot.transpose(0, 2, 1)  # (B, 3, 3)
    pix = np.arange(size, dtype=np.float64)
    dx = pix[None, None, :] - centre_px[:, 0, None, None]  # (B, 1, S)
    dy = pix[None, :, None] - centre_px[:, 1, None, None]  # (B, S, 1)
    q = lambda i, j: quad[:, i, j][:, None, None]  # noqa: E731
    linear = q(0, 2) * dx + q(1, 2) * dy
    constant = q(0, 0) * dx * dx + 2.0 * q(0, 1) * dx * dy + q(1, 1) * dy * dy - 1.0
    discriminant = linear * linear - q(2, 2) * constant  # (B, S, S)
    inside = discriminant > 0
    photos = _backgrounds(size)
    grass = photos[_BACKGROUND_PHOTOS.index("grass") * len(_BACKGROUND_SCALES) + 1]  # strands of hair
    for b in np.flatnonzero(inside.any(axis=(1, 2))):
        top = int(params.hair_crop[b, 0] * (grass.shape[1] - size + 1))
        left = int(params.hair_crop[b, 1] * (grass.shape[2] - size + 1))
        strands = grass[0, top : top + size, left : left + size]  # (S, S)
        # Half the chord along the ray / the z radius: n_z of the ellipsoid, a frontal Lambert term.
        facing = np.sqrt(np.clip(discriminant[b], 0.0, None)) / (q(2, 2)[b] * radii[b, 2] * scale[b])
        shade = (0.55 + 0.45 * strands) * (0.45 + 0.55 * np.clip(facing, 0.0, 1.0))
        canvas[b][inside[b]] = (shade[:, :, None] * params.hair[b])[inside[b]]


def _degrade(images: np.ndarray, params: _Params, noise_rng: np.random.Generator) -> np.ndarray:
    """Optional Gaussian blur and additive noise; clip to [0, 1]; float32."""
    from scipy.ndimage import gaussian_filter

    for b in np.flatnonzero(params.blur > 0):
        images[b] = gaussian_filter(images[b], sigma=(0.0, params.blur[b], params.blur[b]))
    images = images + noise_rng.standard_normal(images.shape) * params.noise[:, None, None, None]
    return np.clip(images, 0.0, 1.0).astype(np.float32)


def _background_chunk(params: _Params, size: int) -> np.ndarray:
    """(B, 3, S, S) float64 random crops of the real photographs."""
    photos = _backgrounds(size)
    out = np.empty((len(params.yaw), 3, size, size))
    for b, (index, (fy, fx)) in enumerate(zip(params.background, params.crop)):
        photo = photos[index]
        top = int(fy * (photo.shape[1] - size + 1))
        left = int(fx * (photo.shape[2] - size + 1))
        crop = photo[:, top : top + size, left : left + size]
        out[b] = (crop[:, :, ::-1] if params.bg_flip[b] else crop) * params.bg_gain[b]
    return out


# --------------------------------------------------------------------------------------------------
# The generated dataset
# --------------------------------------------------------------------------------------------------


def make_faces3d(
    *, n_train: int = 600, n_val: int = 150, n_test: int = 300, image_size: int = 64, seed: int = 0
) -> AlignmentDataset:
    """Generate the ``faces3d`` dataset (see the module docstring for the model).

    Args:
        n_train: training samples (>= 3, so that every yaw bin is populated).
        n_val: validation samples (>= 3).
        n_test: test samples (>= 3).
        image_size: side of the square images and UV maps, in [16, 512].
        seed: seeds everything; equal arguments give identical arrays and ``dataset_id``.

    Returns:
        The dataset; train, val and test use distinct seeds and disjoint LFW faces.

    Raises:
        DatasetError: a bad argument (all broken rules in one message).
    """
    _check_generator_arguments(n_train=n_train, n_val=n_val, n_test=n_test, image_size=image_size, seed=seed)
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    splits = {part: _generate_split(part, n, image_size, seed) for part, n in sizes.items()}
    _, landmark_uv, weights = _uv_layout(image_size)
    return AlignmentDataset(
        name="faces3d",
        dataset_id=stable_key({**_generator_identity(image_size, seed), **sizes, "name": "faces3d"}),
        **splits,
        image_size=image_size,
        uv_weights=weights.copy(),
        landmark_uv=landmark_uv.copy(),
    )


def _generator_identity(image_size: int, seed: int) -> dict[str, Any]:
    """What the generated data depend on besides the split sizes (the dataset_id payload)."""
    digest = hashlib.sha256(np.ascontiguousarray(lfw_faces()).tobytes()).hexdigest()
    return {"version": _GENERATOR_VERSION, "image_size": int(image_size), "seed": int(seed), "lfw": digest}


def _split_faces(part: str, seed: int) -> np.ndarray:
    """The LFW faces (indices into the 100) whose textures a split uses; disjoint across splits."""
    return np.random.default_rng([seed, _SPLIT_FACES_SALT]).permutation(100)[slice(*_SPLIT_FACES[part])]


def _generate_split(part: str, n: int, image_size: int, seed: int) -> AlignmentSplit:
    """Draw the parameters of ``n`` samples from the split's own seed, then render them in chunks."""
    salt = _SPLIT_SALTS[part]
    faces = _split_faces(part, seed)
    params = _sample_params(np.random.default_rng([seed, salt]), n, faces, len(_backgrounds(image_size)))
    images = np.empty((n, 3, image_size, image_size), dtype=np.float32)
    uv_maps = np.empty_like(images)
    landmarks = np.empty((n, NUM_LANDMARKS, 3), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        rows = slice(start, min(start + _CHUNK, n))
        noise_rng = np.random.default_rng([seed, salt, start])
        images[rows], uv_maps[rows], landmarks[rows], _ = _render_chunk(
            _take(params, rows), image_size, noise_rng
        )
    yaw = params.yaw.astype(np.float32)
    return AlignmentSplit(images=images, uv_maps=uv_maps, landmarks=landmarks, yaw=yaw)
