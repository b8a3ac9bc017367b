"""One device rule for every trainable: where it trains, how its data gets there, at which precision.

Every trainable (candidate CNN, MONAS supernet and one-shot evaluation, HyperFD detector, RNAS-MER) asks
this module, with the narrow settings it has (``use_gpu``, ``precision``, ``channels_last``):

- :func:`resolve_device`: ``cuda:<i>`` when a GPU is asked for and visible, the CPU when not asked. Under
  Ray a Tune trial sees only the GPUs it reserved (Ray sets ``CUDA_VISIBLE_DEVICES``), so its GPU is the
  first visible one; a Ray Train worker is handed its device by Ray Train (``ray.train.torch.get_device``,
  see :func:`trainables.train_loop.run_worker`); a process started by ``torchrun`` picks ``LOCAL_RANK``.
- :func:`resolve_precision` and :func:`autocast`: ``"auto"`` is bf16 on a GPU and fp32 on the CPU; bf16
  runs the forward pass under ``torch.autocast`` (also on the CPU when asked), fp32 under a null context,
  so an fp32 run executes exactly the operations it did before this module existed.
- :class:`DeviceData`: a split's tensors resident on the device when they fit (no host copy per step),
  else in pinned host memory with one ``non_blocking`` copy per batch; :func:`to_device` for one tensor.
- :func:`channels_last`: NHWC memory layout for 2D-conv models and their batches (faster convolutions with
  bf16 on recent GPUs); off by default.

Applying it to a training loop (the pattern every trainable here follows)::

    device = resolve_device(settings.use_gpu)
    precision = resolve_precision(settings.precision, gpu=device.type == "cuda")
    model = channels_last(model.to(device), settings.channels_last)
    train = DeviceData(x, y, device=device)                 # (N, C, H, W), (N,)
    order = torch.from_numpy(permutation).to(train.home)    # index where the data lives
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for start, end in batch_bounds(len(order), batch):
        xb, yb = train.take(order[start:end])                # on `device`
        with autocast(device, precision):
            out = model(channels_last(xb, settings.channels_last))
        loss = F.cross_entropy(out.float(), yb)             # the loss in fp32 (a no-op cast in fp32)
        ...
        loss_sum += loss.detach().double() * (end - start)  # no .item() in the step loop
    epoch_loss = float(loss_sum)                            # one device sync per epoch
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "PRECISIONS",
    "DeviceData",
    "autocast",
    "cached_on_device",
    "channels_last",
    "fits_on_device",
    "precision_problems",
    "resolve_device",
    "resolve_precision",
    "to_device",
]

PRECISIONS = ("auto", "fp32", "bf16")
"""Values of a ``precision`` setting: ``auto`` is bf16 on a GPU and fp32 on the CPU."""

_RESIDENT_SHARE = 0.5  # of the GPU's free memory a dataset may take and stay resident (activations need the rest)

def resolve_device(use_gpu: bool) -> torch.device:
    """The device a trainable runs on: the CPU, or with ``use_gpu`` this process's GPU.

    Args:
        use_gpu: train on a GPU.

    Returns:
        ``cpu``, or ``cuda:<i>`` with ``i = LOCAL_RANK mod (visible GPUs)`` (0 in a Tune trial, which sees
        only the GPUs it reserved).

    Raises:
        RuntimeError: ``use_gpu`` is set but this process sees no CUDA device (a Ray trial that reserved
            no GPU sees none: Ray hides them).
    """
    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise RuntimeError(
            "use_gpu=True asks for a GPU, but this process sees no CUDA device "
            f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES={visible!r}); under Ray reserve one "
            "(resources.gpus_per_trial > 0), install a CUDA build of torch, or set use_gpu=False"
        )
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())


def precision_problems(precision: object) -> list[str]:
    """The rule for a ``precision`` setting, as a settings problem (none when it holds)."""
    if precision in PRECISIONS:
        return []
    return [f"precision must be one of {list(PRECISIONS)}, but got precision={precision!r}"]


def resolve_precision(precision: str, *, gpu: bool) -> str:
    """``"fp32"`` or ``"bf16"``: ``precision`` itself, or for ``"auto"`` bf16 on a GPU and fp32 on the CPU.

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    problems = precision_problems(precision)
    if problems:
        raise ValueError(problems[0])
    if precision == "auto":
        return "bf16" if gpu else "fp32"
    return precision


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The context a forward pass runs in: bf16 autocast for ``"bf16"``, a null context for ``"fp32"``.

    ``"auto"`` is resolved by the device (:func:`resolve_precision`). Under bf16, matrix multiplications
    and convolutions run in bfloat16 and reductions stay in float32 (``torch.autocast``'s op lists); compute
    losses on ``output.float()``. Works on the CPU too, so the bf16 path is tested without a GPU.

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    device = torch.device(device)
    if resolve_precision(precision, gpu=device.type == "cuda") == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def channels_last(value: Any, enabled: bool) -> Any:
    """A module or a 4-D batch in NHWC memory layout when ``enabled``; ``value`` unchanged otherwise.

    Only the layout changes (the values and shapes do not); a tensor that is not 4-D is returned as is.
    """
    if not enabled:
        return value
    if isinstance(value, nn.Module):
        return value.to(memory_format=torch.channels_last)
    if isinstance(value, torch.Tensor) and value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; a host-to-GPU copy is ``non_blocking`` (asynchronous from pinned memory)."""
    if tensor.device == device:
        return tensor
    return tensor.to(device, non_blocking=device.type == "cuda")


def fits_on_device(tensors: Sequence[torch.Tensor], device: torch.device, *, share: float = _RESIDENT_SHARE) -> bool:
    """Whether ``tensors`` may stay resident on ``device``: always on the CPU, else within ``share`` of its free memory."""
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return sum(t.numel() * t.element_size() for t in tensors) <= share * free


class DeviceData:
    """The tensors of one split (equal first dimension) where a step loop reads them.

    Resident (``home == device``) when they fit: a batch is an index into device memory, no host copy per
    step. Otherwise they stay on the host (pinned when the device is a GPU) and each batch is gathered there
    and copied with ``non_blocking=True``. On the CPU the tensors are used as they are (no copy).

    Args:
        *tensors: (N, ...) each.
        device: where batches are wanted.
        resident: force the choice (None: :func:`fits_on_device` decides).

    Raises:
        ValueError: no tensors, or tensors of different lengths.
    """

    def __init__(self, *tensors: torch.Tensor, device: torch.device, resident: bool | None = None) -> None:
        if not tensors or len({len(t) for t in tensors}) != 1:
            raise ValueError(
                f"DeviceData needs tensors of one length, but got lengths {[len(t) for t in tensors]}"
            )
        self.device = torch.device(device)
        self.resident = fits_on_device(tensors, self.device) if resident is None else bool(resident)
        self.home = self.device if self.resident else torch.device("cpu")
        pin = not self.resident and self.device.type == "cuda"
        self.tensors = tuple(_pinned(t.to(self.home)) if pin else t.to(self.home) for t in tensors)

    def __len__(self) -> int:
        return len(self.tensors[0])

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The rows ``index`` (an index tensor, best already on :attr:`home`) of every tensor, on :attr:`device`."""
        index = index.to(self.home)
        return tuple(to_device(t[index], self.device) for t in self.tensors)

    def rows(self, start: int, end: int) -> tuple[torch.Tensor, ...]:
        """The rows ``[start, end)`` of every tensor, on :attr:`device`."""
        return tuple(to_device(t[start:end], self.device) for t in self.tensors)

    def strided(self, offset: int, step: int) -> DeviceData:
        """Every ``step``-th row from ``offset`` on (a view: nothing is copied), e.g. one rank's share."""
        view = DeviceData.__new__(DeviceData)
        view.device, view.resident, view.home = self.device, self.resident, self.home
        view.tensors = tuple(t[offset::step] for t in self.tensors)
        return view


def _pinned(tensor: torch.Tensor) -> torch.Tensor:
    try:
        return tensor.pin_memory()
    except RuntimeError:  # no pinned memory to be had (e.g. exhausted): plain pageable copies still work
        return tensor


_DEVICE_COPIES: dict[int, tuple[weakref.ref[Any], dict[str, torch.Tensor]]] = {}  # id(array) -> (ref, copies)


def cached_on_device(array: Any, device: torch.device) -> torch.Tensor:
    """``array`` as a float32 tensor on ``device``; on a GPU the copy is kept while ``array`` lives.

    On the CPU this is ``torch.as_tensor`` (no copy for a float32 array). On a GPU, an evaluation that
    reads the same split for every child (one-shot evaluation) copies it once per process, not per call.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return _float32_tensor(array)
    entry = _DEVICE_COPIES.get(id(array))
    if entry is None or entry[0]() is not array:
        try:  # numpy arrays are unhashable but weak-referenceable: key by id, drop the entry when it dies
            ref = weakref.ref(array, lambda _ref, key=id(array): _DEVICE_COPIES.pop(key, None))
        except TypeError:  # not weak-referenceable (e.g. a list): copy every time
            return _float32_tensor(array).to(device)
        entry = _DEVICE_COPIES[id(array)] = (ref, {})
    copies = entry[1]
    if str(device) not in copies:
        copies[str(device)] = _float32_tensor(array).to(device)
    return copies[str(device)]


def _float32_tensor(array: Any) -> torch.Tensor:
    """``array`` as a float32 CPU tensor sharing its memory; a read-only array is copied (torch needs writable memory)."""
    values = np.asarray(array, dtype=np.float32)
    return torch.from_numpy(values if values.flags.writeable else values.copy())
