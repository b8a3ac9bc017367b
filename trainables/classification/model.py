"""The plain global CNN of Efficient Global NAS, built from a :class:`GlobalArch`.

Paper: ``efficient-global-nas-macro-micro.txt`` §3.1 ("Trimming Search Variables"): no pooling layers,
no skip connections and no fully connected layers; reductions are stride-2 convolutions and the head is
global average pooling plus one linear classifier. Each layer is a depthwise-separable (``sep``) or plain
(``conv``) convolution with kernel 3 or 5.

The layer list comes from :func:`search_algos.spaces.global_space.layer_plan`, the single source of
truth shared with :func:`~search_algos.spaces.global_space.count_params`, so the built network has
exactly the parameter count the searcher reasons about (the micro search trades channels for params).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from search_algos.spaces.global_space import OPS, GlobalArch, layer_plan

__all__ = ["GlobalCNN", "build_global_cnn"]


def _sep_layer(c_in: int, c_out: int, stride: int, kernel: int) -> nn.Sequential:
    """Depthwise k x k -> pointwise 1x1 -> BN -> ReLU (no conv bias: BN's shift replaces it)."""
    return nn.Sequential(
        OrderedDict(
            depthwise=nn.Conv2d(c_in, c_in, kernel, stride, padding=kernel // 2, groups=c_in, bias=False),
            pointwise=nn.Conv2d(c_in, c_out, 1, bias=False),
            bn=nn.BatchNorm2d(c_out),
            relu=nn.ReLU(inplace=True),
        )
    )


def _conv_layer(c_in: int, c_out: int, stride: int, kernel: int) -> nn.Sequential:
    """Plain k x k conv -> BN -> ReLU."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
            bn=nn.BatchNorm2d(c_out),
            relu=nn.ReLU(inplace=True),
        )
    )


_LAYERS: dict[str, Callable[[int, int, int, int], nn.Sequential]] = {"sep": _sep_layer, "conv": _conv_layer}
if set(_LAYERS) != set(OPS):  # the space grew an op the model cannot build: fail at import, not mid-search
    raise ImportError(f"global_cnn builds ops {sorted(_LAYERS)} but the global space defines {sorted(OPS)}")


class GlobalCNN(nn.Module):
    """A stack of ``arch.depth`` conv layers, global average pooling and a linear head (paper §3.1).

    Args:
        arch: the architecture (depth, first-layer width, per-layer op and kernel).
        in_channels: image channels (1 for digits/MNIST, 3 for CIFAR).
        num_classes: outputs of the linear head.

    Shapes:
        input ``(B, in_channels, H, W)`` -> logits ``(B, num_classes)``; any ``H, W >= 1`` (the head
        pools globally, so the model is independent of the image size).
    """

    def __init__(self, arch: GlobalArch, *, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"in_channels >= 1 and num_classes >= 1 must hold, but got in_channels={in_channels}, "
                f"num_classes={num_classes}"
            )
        plan = layer_plan(arch, in_channels)
        self.features = nn.Sequential(
            *(_LAYERS[op](c_in, c_out, stride, kernel) for c_in, c_out, stride, op, kernel in plan)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(plan[-1][1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C_last, H', W'); H' ~ H / 4 (at most two stride-2 layers)
        x = torch.flatten(self.pool(x), 1)  # (B, C_last)
        return self.classifier(x)  # (B, num_classes)


def build_global_cnn(arch: GlobalArch, *, in_channels: int, num_classes: int) -> GlobalCNN:
    """Build the network for ``arch``; its parameter count equals ``count_params(arch, ...)``.

    The result is TorchScript-able (``torch.jit.script(build_global_cnn(...))``).
    """
    return GlobalCNN(arch, in_channels=in_channels, num_classes=num_classes)
