"""Micro-expression clips for RNAS-MER: a seeded generator from real LFW faces, and a CASME-II/SAMM loader.

Paper: ``rnas-mer-micro-expression-nas.txt`` §4.1: three composite classes as MEGC-2019 (negative,
positive, surprise), clips normalised to equal length (the paper uses TIM; here linear interpolation in
time, :func:`temporal_interpolate`), leave-one-subject-out evaluation. DESIGN.md §4 (no network at run
time): the generated set starts from scikit-image's ``lfw_subset`` faces.

Two datasets (:func:`load_microexpr`):

- ``microexpr``: every subject is one distinct LFW face (the first 100 images of ``lfw_subset`` are
  faces). An episode is a raw sequence from onset to offset (12-24 frames) in which a class-specific,
  smooth displacement field around the mouth corners, cheeks, brows or jaw (action-unit-like) rises
  from 0 at onset to the apex and falls back, at most ``max_motion`` pixels anywhere; subjects differ
  in their landmark positions, every episode in amplitude and timing. Head jitter (a per-frame random
  walk of the whole face), blinks in any class, brightness drift and sensor noise are added, then the
  sequence is interpolated to ``frames`` frames.
- ``mer_folder``: CASME-II / SAMM-style files a user brings: ``path/<subject>/<episode>/<frames>``
  (jpg, png, bmp; the frame number is the last integer in the file name) and a CSV coding sheet
  (``subject, episode, onset, apex, offset, emotion``; CASME-II / SAMM header names are accepted) whose
  emotions are mapped to the three composite classes (``others`` is left out, as in MEGC-2019).

Every clip is standardised on its own (zero mean, unit std): no statistic crosses subjects, so LOSO
folds leak nothing. Bad input raises :class:`trainables.checks.DatasetError` with a one-line message.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search_algos.spaces.base import stable_key
from trainables.checks import DatasetError, integer_problem
from trainables.faces import lfw_faces

__all__ = [
    "CLASS_NAMES",
    "EMOTION_CLASSES",
    "MICROEXPR_DATASETS",
    "MicroExprDataset",
    "load_microexpr",
    "loso_folds",
    "magnify",
    "make_microexpr",
    "microexpr_meta_features",
    "subject_split",
    "temporal_interpolate",
]

CLASS_NAMES = ("negative", "positive", "surprise")  # MEGC-2019 composite classes
MICROEXPR_DATASETS = ("microexpr", "mer_folder")
_GENERATOR_VERSION = 2
# Random streams: numpy.random.default_rng([seed, SALT]). Both exceed the 1,000 epochs the loops of
# trainables.microexpr.train are built for (their flip seeds), so the loops' batches, drawn from
# [seed, epoch], never share a stream with them.
_SUBJECT_SPLIT_SALT = 4099  # subject_split: the order of the subjects that is cut into Train A and Train B
_GENERATOR_SALT = 2023  # make_microexpr: the identities, their geometry, classes and every clip's motion and noise
# MEGC-2019: positive = happiness; negative = the CASME-II/SAMM negative emotions; surprise.
EMOTION_CLASSES: dict[str, int] = {
    "happiness": 1, "happy": 1, "positive": 1,
    "disgust": 0, "repression": 0, "anger": 0, "contempt": 0, "fear": 0, "sadness": 0, "sad": 0, "negative": 0,
    "surprise": 2,
}  # fmt: skip
_LEFT_OUT = ("others", "other")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True, eq=False)
class MicroExprDataset:
    """Clips, labels and subjects; folds are made by :func:`loso_folds` and :func:`subject_split`.

    Attributes:
        name: ``microexpr`` or ``mer_folder``.
        dataset_id: stable 16-hex id of the content (generator arguments, or the files).
        clips: ``(N, 1, T, H, W)`` float32, each clip standardised on its own.
        labels: ``(N,)`` int64 in ``[0, 3)`` (:data:`CLASS_NAMES`).
        subjects: ``(N,)`` int64 index into ``subject_names``.
        subject_names: one name per subject.
        episodes: ``(N,)`` episode names.
    """

    name: str
    dataset_id: str
    clips: np.ndarray
    labels: np.ndarray
    subjects: np.ndarray
    subject_names: tuple[str, ...]
    episodes: tuple[str, ...]
    class_names: tuple[str, ...] = CLASS_NAMES

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def frames(self) -> int:
        return int(self.clips.shape[2])

    @property
    def image_size(self) -> int:
        return int(self.clips.shape[3])

    def __len__(self) -> int:
        return len(self.labels)


# -- shared helpers ---------------------------------------------------------------------------------


def temporal_interpolate(frames: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation in time (TIM-like): ``(n, H, W) -> (length, H, W)``, ends kept exactly."""
    n = len(frames)
    if n == 0:
        raise ValueError("cannot interpolate an empty sequence")
    if n == 1:
        return np.repeat(frames, length, axis=0)
    position = np.linspace(0.0, n - 1, length)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, n - 1)
    frac = (position - low)[:, None, None]
    return (1.0 - frac) * frames[low] + frac * frames[high]


def _standardise(clip: np.ndarray) -> np.ndarray:
    return ((clip - clip.mean()) / max(float(clip.std()), 1e-6)).astype(np.float32)


def loso_folds(subjects: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Leave-one-subject-out: ``(subject, train rows, test rows)`` for every subject, in subject order."""
    subjects = np.asarray(subjects)
    rows = np.arange(len(subjects))
    return [(int(s), rows[subjects != s], rows[subjects == s]) for s in np.unique(subjects)]


def subject_split(subjects: np.ndarray, seed: int, fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Rows of two disjoint subject groups (Algorithm 1's Train A / Train B), seeded."""
    unique = np.unique(subjects)
    if len(unique) < 2:
        raise ValueError("a subject split needs at least two subjects")
    order = np.random.default_rng([seed, _SUBJECT_SPLIT_SALT]).permutation(unique)
    cut = min(len(unique) - 1, max(1, int(round(fraction * len(unique)))))
    rows = np.arange(len(subjects))
    in_a = np.isin(subjects, order[:cut])
    return rows[in_a], rows[~in_a]


# -- the generator ----------------------------------------------------------------------------------

# Action-unit-like motions at the apex: (row, col) as fractions of the face crop, (dy, dx) per unit of
# amplitude (rows grow downwards). After FACS: AU12 (lip corners up and out) + AU6 for positive; AU4
# (brows lowered and drawn together) + AU15 (lip corners down) for negative; AU1+2 (brows up) + AU26
# (jaw drop) for surprise.
_MOTIONS: dict[int, tuple[tuple[float, float, float, float], ...]] = {
    1: ((0.74, 0.32, -0.7, -0.7), (0.74, 0.68, -0.7, 0.7), (0.60, 0.30, -0.4, 0.0), (0.60, 0.70, -0.4, 0.0)),
    0: ((0.30, 0.40, 0.6, 0.5), (0.30, 0.60, 0.6, -0.5), (0.74, 0.32, 0.7, 0.0), (0.74, 0.68, 0.7, 0.0)),
    2: ((0.28, 0.32, -0.9, 0.0), (0.28, 0.50, -0.9, 0.0), (0.28, 0.68, -0.9, 0.0), (0.84, 0.50, 0.8, 0.0)),
}
_EYES = ((0.40, 0.32), (0.40, 0.68))


def _field(size: int, bumps: list[tuple[float, float, float, float]], sigma: float) -> np.ndarray:
    """Sum of Gaussian displacement bumps: ``(2, size, size)`` (dy, dx) in pixels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = np.zeros((2, size, size))
    for row, col, dy, dx in bumps:
        g = np.exp(-((yy - row * size) ** 2 + (xx - col * size) ** 2) / (2 * sigma**2))
        out[0] += dy * g
        out[1] += dx * g
    return out


def _cap(field: np.ndarray, limit: float) -> np.ndarray:
    norm = np.sqrt((field**2).sum(axis=0))
    peak = float(norm.max())
    return field * (limit / peak) if peak > limit else field


def _envelope(n: int, apex: int) -> np.ndarray:
    """0 at onset (frame 0) and offset (frame n-1), 1 at the apex, smooth (raised cosine) in between."""
    t = np.arange(n, dtype=np.float64)
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip(t / max(apex, 1), 0, 1))
    fall = 0.5 - 0.5 * np.cos(np.pi * np.clip((n - 1 - t) / max(n - 1 - apex, 1), 0, 1))
    return np.where(t <= apex, rise, fall)


def _resized_faces(size: int) -> np.ndarray:
    """(100, size, size) float64: the LFW faces resized."""
    from skimage.transform import resize

    return np.stack([resize(f, (size, size), anti_aliasing=True) for f in lfw_faces()])


def _episode(face: np.ndarray, label: int, landmarks: np.ndarray, rng: np.random.Generator, *, frames: int,
             max_motion: float, noise: float) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    size = face.shape[0]
    amplitude = max_motion * rng.uniform(0.55, 1.0)
    bumps = [(r + landmarks[i, 0], c + landmarks[i, 1], dy, dx) for i, (r, c, dy, dx) in enumerate(_MOTIONS[label])]
    field = _cap(amplitude * _field(size, bumps, sigma=0.08 * size), max_motion)  # (2, S, S), <= max_motion
    if rng.random() < 0.4:  # a blink, in any class: upper lids move down and back
        blink = _cap(_field(size, [(r, c, 1.2, 0.0) for r, c in _EYES], sigma=0.05 * size), max_motion)
    else:
        blink = np.zeros_like(field)
    n = int(rng.integers(12, 25))  # raw frames from onset to offset
    apex = int(rng.integers(n // 4, 3 * n // 4 + 1))
    envelope = _envelope(n, apex)
    blink_at = int(rng.integers(0, n))
    head = np.cumsum(rng.normal(0.0, 0.15, size=(n, 2)), axis=0)  # random walk of the whole head (px)
    head = np.clip(head - head[0], -0.75, 0.75)
    drift = np.linspace(0.0, rng.normal(0.0, 0.03), n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    raw = np.empty((n, size, size))
    for t in range(n):
        blink_w = max(0.0, 1.0 - abs(t - blink_at) / 2.0)
        dy = envelope[t] * field[0] + blink_w * blink[0] + head[t, 0]
        dx = envelope[t] * field[1] + blink_w * blink[1] + head[t, 1]
        raw[t] = map_coordinates(face, [yy - dy, xx - dx], order=1, mode="nearest") + drift[t]
    clip = temporal_interpolate(raw, frames)
    clip = clip + rng.normal(0.0, noise, size=clip.shape)
    return _standardise(clip)[None]  # (1, T, S, S)


def make_microexpr(*, subjects: int = 12, episodes: int = 6, frames: int = 8, image_size: int = 32, seed: int = 0,
                   max_motion: float = 2.0, noise: float = 0.02) -> MicroExprDataset:
    """Generate the ``microexpr`` set (see the module docstring); the same arguments give the same clips."""
    _check_generator(subjects=subjects, episodes=episodes, frames=frames, image_size=image_size,
                     max_motion=max_motion, noise=noise)
    rng = np.random.default_rng([seed, _GENERATOR_SALT])
    faces = _resized_faces(image_size)
    chosen = rng.permutation(len(faces))[:subjects]  # distinct identities
    clips, labels, owners, names = [], [], [], []
    for s, face_index in enumerate(chosen):
        landmarks = rng.normal(0.0, 0.02, size=(4, 2))  # the subject's own face geometry
        classes = list(rng.permutation(3))[: min(3, episodes)]  # every subject shows each class once...
        classes += list(rng.choice(3, size=episodes - len(classes), p=[0.45, 0.30, 0.25]))  # ...then imbalanced
        for e, label in enumerate(classes):
            clips.append(_episode(faces[face_index], int(label), landmarks, rng, frames=frames,
                                  max_motion=max_motion, noise=noise))
            labels.append(int(label))
            owners.append(s)
            names.append(f"s{s:02d}_ep{e:02d}")
    identity = {"generator": "microexpr", "version": _GENERATOR_VERSION, "subjects": subjects, "episodes": episodes,
                "frames": frames, "image_size": image_size, "seed": seed, "max_motion": max_motion, "noise": noise}
    return MicroExprDataset(
        name="microexpr", dataset_id=stable_key(identity), clips=np.stack(clips).astype(np.float32),
        labels=np.asarray(labels, dtype=np.int64), subjects=np.asarray(owners, dtype=np.int64),
        subject_names=tuple(f"lfw{int(i):03d}" for i in chosen), episodes=tuple(names),
    )


def _check_generator(**args: Any) -> None:
    rules = {"subjects": (2, 100), "episodes": (1, 1000), "frames": (2, 256), "image_size": (16, 256)}
    for key, (low, high) in rules.items():
        problem = integer_problem(key, args[key], low, high)
        if problem:
            raise DatasetError(problem)
    if not 0 < args["max_motion"] <= 2.0:
        raise DatasetError(f"max_motion must be in (0, 2] pixels (micro-expressions are subtle), got {args['max_motion']!r}")
    if not 0 <= args["noise"] < 1:
        raise DatasetError(f"noise must be in [0, 1), got {args['noise']!r}")


# -- CASME-II / SAMM-style folders -------------------------------------------------------------------

_COLUMNS = {
    "subject": ("subject", "sub"),
    "episode": ("episode", "filename", "file name", "folder"),
    "onset": ("onset", "onsetframe", "onset frame"),
    "apex": ("apex", "apexframe", "apex frame"),
    "offset": ("offset", "offsetframe", "offset frame"),
    "emotion": ("emotion", "estimated emotion", "estimatedemotion", "objective classes"),
}


def _header_map(header: list[str], sheet: Path) -> dict[str, int]:
    normal = [h.strip().lower().replace("_", " ") for h in header]
    found, missing = {}, []
    for role, names in _COLUMNS.items():
        index = next((normal.index(n) for n in names if n in normal), None)
        if index is None:
            missing.append(role)
        else:
            found[role] = index
    if missing:
        raise DatasetError(
            f"coding sheet {sheet} lacks the column(s) {', '.join(missing)} (found: {', '.join(header) or 'none'}); "
            "give it a header row with subject, episode, onset, apex, offset, emotion"
        )
    return found


def _frame_number(path: Path) -> int | None:
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else None


def _subject_folder(root: Path, subject: str) -> Path | None:
    for name in (subject, f"sub{subject}", f"sub{subject.zfill(2)}", subject.zfill(3), subject.lstrip("0")):
        if name and (root / name).is_dir():
            return root / name
    return None


def _read_frame(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    from skimage.transform import resize

    try:
        with Image.open(path) as image:
            gray = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"frame {path} cannot be read as an image ({type(exc).__name__}); replace or remove it") from None
    return resize(gray, (size, size), anti_aliasing=True)


def _int_cell(row: list[str], index: int, what: str, sheet: Path, line: int) -> int:
    text = row[index].strip() if index < len(row) else ""
    try:
        return int(float(text))
    except ValueError:
        raise DatasetError(f"coding sheet {sheet} line {line}: {what} must be a frame number, got {text!r}") from None


def load_microexpr_folder(path: str | Path, *, coding_sheet: str | Path | None = None, frames: int = 8,
                          image_size: int = 32) -> MicroExprDataset:
    """Read a CASME-II / SAMM-style folder and its coding sheet (see the module docstring).

    Raises:
        DatasetError: missing folder, sheet or columns; bad frame numbers; unknown emotions; episodes
            without frames in their onset..offset range; unreadable images; fewer than two subjects.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"micro-expression folder {root} does not exist; set data.path to the folder of subject folders")
    sheet = Path(coding_sheet).expanduser() if coding_sheet else root / "coding.csv"
    if not sheet.is_file():
        raise DatasetError(f"coding sheet {sheet} does not exist; set data.coding_sheet to the CSV file")
    try:
        with open(sheet, newline="", encoding="utf-8-sig") as fh:
            table = [row for row in csv.reader(fh) if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"coding sheet {sheet} is not a CSV text file ({type(exc).__name__}); export it as CSV") from None
    if len(table) < 2:
        raise DatasetError(f"coding sheet {sheet} has no episodes; add one row per episode below the header")
    columns = _header_map(table[0], sheet)
    clips, labels, owners, names = [], [], [], []
    subject_index: dict[str, int] = {}
    digest = hashlib.sha256()
    for line, row in enumerate(table[1:], start=2):
        cell = lambda role: row[columns[role]].strip() if columns[role] < len(row) else ""  # noqa: E731
        emotion = cell("emotion").lower()
        if emotion in _LEFT_OUT:
            continue
        if emotion not in EMOTION_CLASSES:
            raise DatasetError(
                f"coding sheet {sheet} line {line}: unknown emotion {cell('emotion')!r}; "
                f"use one of {', '.join(sorted(EMOTION_CLASSES))} (or 'others' to leave the episode out)"
            )
        onset, apex, offset = (_int_cell(row, columns[r], r, sheet, line) for r in ("onset", "apex", "offset"))
        if not onset <= apex <= offset:
            raise DatasetError(f"coding sheet {sheet} line {line}: onset <= apex <= offset must hold, got {onset}, {apex}, {offset}")
        subject, episode = cell("subject"), cell("episode")
        folder = _subject_folder(root, subject)
        if folder is None or not (folder / episode).is_dir():
            raise DatasetError(f"coding sheet {sheet} line {line}: no folder {root}/{subject}/{episode}; fix the sheet or the folder names")
        files = sorted(
            (p for p in (folder / episode).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES and _frame_number(p) is not None),
            key=_frame_number,
        )
        chosen = [p for p in files if onset <= _frame_number(p) <= offset]
        if not chosen:
            raise DatasetError(
                f"{folder / episode} has no frames numbered {onset}..{offset} (line {line} of {sheet}); "
                "check the onset/offset columns against the file names"
            )
        for p in chosen:
            digest.update(f"{p.relative_to(root).as_posix()}:{p.stat().st_size}".encode())
        raw = np.stack([_read_frame(p, image_size) for p in chosen])
        clips.append(_standardise(temporal_interpolate(raw, frames))[None])
        labels.append(EMOTION_CLASSES[emotion])
        owners.append(subject_index.setdefault(folder.name, len(subject_index)))
        names.append(f"{folder.name}/{episode}")
    if len(subject_index) < 2:
        raise DatasetError(f"{root}: leave-one-subject-out needs at least two subjects with episodes, found {len(subject_index)}")
    digest.update(sheet.read_bytes())
    identity = {"loader": "mer_folder", "files": digest.hexdigest(), "frames": frames, "image_size": image_size}
    return MicroExprDataset(
        name="mer_folder", dataset_id=stable_key(identity), clips=np.stack(clips).astype(np.float32),
        labels=np.asarray(labels, dtype=np.int64), subjects=np.asarray(owners, dtype=np.int64),
        subject_names=tuple(subject_index), episodes=tuple(names),
    )


def magnify(ds: MicroExprDataset, factor: float) -> MicroExprDataset:
    """Linear Eulerian motion magnification of every clip, as the paper's input (§4.1: "we utilized the
    magnified videos [19]", Wu et al., Eulerian Video Magnification, 2012).

    ``I'(t) = I(t) + factor * (I(t) - I(0))``: each clip's change from its onset frame is amplified by
    ``1 + factor``, then the clip is standardised again. This is [19]'s linear magnification with the
    temporal band reduced to "everything but the onset frame" and no spatial pyramid (an assumption:
    the paper names the method, not its settings). Each clip is processed on its own, so no statistic
    crosses subjects and LOSO folds leak nothing. ``factor`` 0 returns ``ds`` itself (the same id).

    Raises:
        DatasetError: ``factor`` is negative or above 50.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 <= factor <= 50:
        raise DatasetError(f"magnify must be a number in [0, 50] (0: off; the paper's input is magnified), got {factor!r}")
    if factor == 0:
        return ds
    clips = ds.clips.astype(np.float64)
    clips = clips + factor * (clips - clips[:, :, :1])  # (N, 1, T, H, W): amplify the change from onset
    out = np.stack([_standardise(c) for c in clips])
    identity = {"base": ds.dataset_id, "magnify": float(factor)}
    return dataclasses.replace(ds, dataset_id=stable_key(identity), clips=out.astype(np.float32))


def load_microexpr(name: str = "microexpr", *, path: str | None = None, coding_sheet: str | None = None,
                   subjects: int = 12, episodes: int = 6, frames: int = 8, image_size: int = 32, seed: int = 0,
                   max_motion: float = 2.0, noise: float = 0.02, magnify_factor: float = 0.0) -> MicroExprDataset:
    """The configured micro-expression set (the keyword arguments of the data config), magnified by
    ``magnify_factor`` (:func:`magnify`; 0: as recorded)."""
    if name == "microexpr":
        ds = make_microexpr(subjects=subjects, episodes=episodes, frames=frames, image_size=image_size,
                            seed=seed, max_motion=max_motion, noise=noise)
    elif name == "mer_folder":
        if not path:
            raise DatasetError("dataset 'mer_folder' needs data.path: the folder of subject/episode/frame folders")
        ds = load_microexpr_folder(path, coding_sheet=coding_sheet, frames=frames, image_size=image_size)
    else:
        raise DatasetError(f"unknown micro-expression dataset {name!r}; valid: {', '.join(MICROEXPR_DATASETS)}")
    return magnify(ds, magnify_factor)


def microexpr_meta_features(ds: MicroExprDataset) -> dict[str, float]:
    """Image-free summary for the benchmark store: sizes, class balance, motion energy."""
    counts = np.bincount(ds.labels, minlength=ds.num_classes) / max(len(ds), 1)
    motion = float(np.abs(np.diff(ds.clips, axis=2)).mean()) if ds.frames > 1 else 0.0
    out = {"n_clips": float(len(ds)), "n_subjects": float(len(ds.subject_names)), "frames": float(ds.frames),
           "image_size": float(ds.image_size), "motion_energy": motion}
    out.update({f"class_fraction_{n}": float(c) for n, c in zip(ds.class_names, counts)})
    return out
