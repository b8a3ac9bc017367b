"""Trainables: PyTorch models, training/evaluation functions, datasets and metrics.

One package per data kind of the config (each with ``data``, ``model``, ``train`` and, where the task has
them, ``metrics``, ``generator`` and ``formats`` modules):

- :mod:`trainables.classification`: Efficient Global NAS (digits, LFW faces, CIFAR-10, MNIST).
- :mod:`trainables.alignment`: MONAS (3D face alignment, UV position maps).
- :mod:`trainables.detection`: HyperFD (face detection across domains).
- :mod:`trainables.microexpr`: RNAS-MER (micro-expression recognition).

Shared by all: :mod:`trainables.faces` (scikit-image's LFW faces and photographs), :mod:`trainables.checks`
(argument checks, ``DatasetError``), :mod:`trainables.device` (the device rule) and
:mod:`trainables.train_loop` (the epoch loops' collectives, checkpoints and Ray Train plumbing).

Dependency rule (DESIGN.md §2): imports ``search_algos.spaces``, torch and ray.train/ray.tune;
never the searchers and never ``orchestrator``.
"""
