"""Micro-expression recognition: the trainable of RNAS-MER (``rnas-mer-micro-expression-nas.txt``).

Modules:

- :mod:`~trainables.microexpr.data`: the clips (:class:`MicroExprDataset`): the seeded ``microexpr``
  generator on LFW faces, CASME-II / SAMM-style folders, leave-one-subject-out folds, meta-features.
- :mod:`~trainables.microexpr.metrics`: UAR, UF1 and the confusion matrix (MEGC-2019).
- :mod:`~trainables.microexpr.model`: the hybrid 3D-conv operations, the searchable supernet, decoded
  networks and the size-class baseline.
- :mod:`~trainables.microexpr.train`: the bilevel search (Algorithm 1) and LOSO retraining.
"""
