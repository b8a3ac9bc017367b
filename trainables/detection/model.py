"""A small anchor-based single-stage face detector built from a :class:`DetectorArch`.

Paper: ``hyperfd-online-automl-face-detection-supplement.txt`` §B.1 and §B.3: RetinaFace with a
MobileNetV2-style backbone (channels x 0.5), LeakyReLU activations, FPN, NMS 0.4. Scaled down for
64-pixel images and CPU training (the paper's images are 640 pixels):

- Backbone: a 3x3 stem (stride 1: the paper's stride-2 stem would leave 2x2 maps at the last stage),
  then the inverted-residual (MBConv) blocks of :meth:`DetectorArch.blocks` (Table 3 widths times
  ``width_mult``): 1x1 expand -> k x k depthwise (stride) -> 1x1 project, identity residual where the
  stride is 1 and the widths match. Overall stride 16.
- FPN-lite, two levels: laterals from the ends of stages 5 (stride 8) and 7 (stride 16)
  (:data:`FPN_TAP_STAGES`), top-down nearest up-sampling and a 3x3 smoothing conv per level.
- Heads shared by both levels: 3x3 conv to ``A`` face logits and ``4 A`` box offsets per position.
- Anchors: ``A = 3`` square-ish anchors (height = size, width = 0.87 size: faces are taller than wide)
  per position; sizes scale with the image (:data:`ANCHOR_SIZES`, fractions of the image side).

Box offsets use SSD / RetinaFace encoding with variances (0.1, 0.2) (:func:`encode_boxes`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from search_algos.spaces.detector import FPN_TAP_STAGES, DetectorArch

__all__ = [
    "ANCHOR_ASPECT",
    "ANCHOR_SIZES",
    "FaceDetector",
    "decode_boxes",
    "encode_boxes",
    "make_anchors",
]

# Per FPN level, anchor heights as fractions of the image side: at 64 px, 8/12/18 px on the stride-8
# level and 26/38/54 px on the stride-16 level, covering the domains' faces (8 to 54 px).
ANCHOR_SIZES: tuple[tuple[float, ...], ...] = ((0.125, 0.1875, 0.28), (0.40, 0.60, 0.85))
ANCHOR_ASPECT = 0.87  # width / height
_VARIANCES = (0.1, 0.2)
_LEAK = 0.1


def _act() -> nn.Module:
    return nn.LeakyReLU(_LEAK, inplace=True)


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act:
        layers.append(_act())
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual block (MobileNetV2): expand 1x1 -> depthwise k x k -> linear project 1x1."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int, kernel: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(c_in, hidden, 1))
        layers += [_conv_bn(hidden, hidden, kernel, stride, groups=hidden), _conv_bn(hidden, c_out, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


def _scaled(width: int, width_mult: float) -> int:
    return max(4, int(round(width * width_mult)))


class FaceDetector(nn.Module):
    """Backbone (from ``arch``) + FPN-lite + shared heads; see the module docstring.

    Args:
        arch: the backbone encoding (Table 3).
        image_size: side of the square input images (anchors depend on it).
        width_mult: multiplies every width of Table 3 (1.0: the paper's channels x 0.5 widths as they are;
            at 0.5 the detector learns much more slowly in few epochs, for a small saving on a CPU).
        fpn_channels: channels of both FPN levels and the heads.

    Shapes: ``forward(x)`` with x (B, 3, S, S) returns ``(logits (B, N), offsets (B, N, 4))`` with
    N = number of anchors (:attr:`anchors`, (N, 4) pixel xyxy, in the same order).
    """

    def __init__(self, arch: DetectorArch, *, image_size: int = 64, width_mult: float = 1.0, fpn_channels: int = 24) -> None:
        super().__init__()
        blocks = arch.blocks()
        stem_width = _scaled(blocks[0][1], width_mult)
        self.stem = _conv_bn(3, stem_width, 3)
        self.blocks = nn.ModuleList()
        self._tap_after: dict[int, int] = {}  # block index -> FPN level
        last_of_stage = {stage: i for i, (stage, *_rest) in enumerate(blocks)}
        tap_channels = []
        for i, (stage, c_in, c_out, stride, expand, kernel) in enumerate(blocks):
            c_in_s = stem_width if i == 0 else _scaled(c_in, width_mult)
            self.blocks.append(MBConv(c_in_s, _scaled(c_out, width_mult), stride, expand, kernel))
            if stage in FPN_TAP_STAGES and last_of_stage[stage] == i:
                self._tap_after[i] = FPN_TAP_STAGES.index(stage)
                tap_channels.append(_scaled(c_out, width_mult))
        strides = []
        total = 1
        for i, (_stage, _ci, _co, stride, _e, _k) in enumerate(blocks):
            total *= stride
            if i in self._tap_after:
                strides.append(total)
        self.strides = tuple(strides)  # (8, 16)
        self.lateral = nn.ModuleList(_conv_bn(c, fpn_channels, 1) for c in tap_channels)
        self.smooth = nn.ModuleList(_conv_bn(fpn_channels, fpn_channels, 3) for _ in tap_channels)
        self.num_anchors = len(ANCHOR_SIZES[0])
        self.cls_head = nn.Conv2d(fpn_channels, self.num_anchors, 3, padding=1)
        self.box_head = nn.Conv2d(fpn_channels, 4 * self.num_anchors, 3, padding=1)
        # Start every anchor at a face prior of 1 % so the many negatives do not swamp the first steps
        # (RetinaNet's initialisation).
        nn.init.normal_(self.cls_head.weight, std=0.01)
        nn.init.constant_(self.cls_head.bias, -math.log(99.0))
        nn.init.normal_(self.box_head.weight, std=0.01)
        nn.init.zeros_(self.box_head.bias)
        self.image_size = image_size
        self.register_buffer("anchors", make_anchors(image_size, self.strides), persistent=False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """FPN levels, finest first: [(B, F, S/8, S/8), (B, F, S/16, S/16)]."""
        taps: list[torch.Tensor] = [torch.empty(0)] * len(self.lateral)
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._tap_after:
                taps[self._tap_after[i]] = x
        levels = [lat(t) for lat, t in zip(self.lateral, taps)]
        for j in range(len(levels) - 2, -1, -1):  # top-down: coarse features refine the finer level
            levels[j] = levels[j] + F.interpolate(levels[j + 1], size=levels[j].shape[-2:], mode="nearest")
        return [smooth(level) for smooth, level in zip(self.smooth, levels)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, offsets = [], []
        for level in self.features(x):
            b = level.shape[0]
            # (B, A, H, W) -> (B, H, W, A) -> (B, H*W*A): the anchors' order (position-major).
            logits.append(self.cls_head(level).permute(0, 2, 3, 1).reshape(b, -1))
            offsets.append(self.box_head(level).permute(0, 2, 3, 1).reshape(b, -1, 4))
        return torch.cat(logits, dim=1), torch.cat(offsets, dim=1)


def make_anchors(image_size: int, strides: tuple[int, ...]) -> torch.Tensor:
    """Anchors (N, 4) pixel xyxy, level by level, row-major positions, ``A`` sizes per position."""
    out = []
    for stride, sizes in zip(strides, ANCHOR_SIZES):
        n = math.ceil(image_size / stride)
        centres = (torch.arange(n, dtype=torch.float32) + 0.5) * stride  # (n,)
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")  # (n, n)
        hs = torch.tensor(sizes, dtype=torch.float32) * image_size  # (A,)
        ws = hs * ANCHOR_ASPECT
        cx, cy = cx[..., None].expand(n, n, len(sizes)), cy[..., None].expand(n, n, len(sizes))
        boxes = torch.stack([cx - ws / 2, cy - hs / 2, cx + ws / 2, cy + hs / 2], dim=-1)  # (n, n, A, 4)
        out.append(boxes.reshape(-1, 4))
    return torch.cat(out)


def encode_boxes(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Offsets (N, 4) of ``boxes`` (N, 4) xyxy relative to ``anchors`` (N, 4) (variances 0.1, 0.2)."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    bw = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3)
    bh = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
    bx, by = boxes[:, 0] + bw / 2, boxes[:, 1] + bh / 2
    return torch.stack(
        [(bx - ax) / aw / _VARIANCES[0], (by - ay) / ah / _VARIANCES[0],
         torch.log(bw / aw) / _VARIANCES[1], torch.log(bh / ah) / _VARIANCES[1]],
        dim=1,
    )  # fmt: skip


def decode_boxes(offsets: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_boxes`: (..., N, 4) offsets -> (..., N, 4) xyxy boxes."""
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    cx = ax + offsets[..., 0] * _VARIANCES[0] * aw
    cy = ay + offsets[..., 1] * _VARIANCES[0] * ah
    w = aw * torch.exp((offsets[..., 2] * _VARIANCES[1]).clamp(max=4.0))
    h = ah * torch.exp((offsets[..., 3] * _VARIANCES[1]).clamp(max=4.0))
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
