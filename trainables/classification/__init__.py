"""Image classification: the trainable of Efficient Global NAS (``efficient-global-nas-macro-micro.txt``).

Modules:

- :mod:`~trainables.classification.data`: the registered datasets (scikit-learn's digits, LFW faces vs
  non-faces, CIFAR-10 and MNIST-family files), stratified seeded splits, meta-features.
- :mod:`~trainables.classification.formats`: their readers (package data, CIFAR-10 batches, IDX files).
- :mod:`~trainables.classification.model`: the plain global CNN built from a ``GlobalArch``.
- :mod:`~trainables.classification.train`: one candidate trained from scratch, in process or over Ray Train.
"""
