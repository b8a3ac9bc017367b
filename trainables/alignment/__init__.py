"""3D face alignment: the trainable of MONAS (``monas-multipath-oneshot-nas-3d-face-alignment.txt``).

Modules:

- :mod:`~trainables.alignment.data`: the dataset values (:class:`AlignmentSplit`, :class:`AlignmentDataset`),
  the registered datasets and :func:`load_alignment_dataset`, meta-features.
- :mod:`~trainables.alignment.generator`: the seeded ``faces3d`` generator (3D faces on LFW textures).
- :mod:`~trainables.alignment.formats`: the AFLW2000-3D / 300W-LP folder reader.
- :mod:`~trainables.alignment.metrics`: NME on 68 landmarks, NME by yaw bin, dense NME.
- :mod:`~trainables.alignment.model`: the multi-path supernet and its children.
- :mod:`~trainables.alignment.train`: supernet training with MNUS, one-shot evaluation, stand-alone retraining.
"""
