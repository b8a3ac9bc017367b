"""Face detection: the trainable of HyperFD (``hyperfd-online-automl-face-detection-supplement.txt``).

Modules:

- :mod:`~trainables.detection.data`: the dataset values (:class:`DetectionSplit`,
  :class:`DetectionDataset`), the 6 : 1 : 3 split, meta-features and the clustered sub-datasets (§B.4).
- :mod:`~trainables.detection.generator`: the domains (LFW faces on real photographs, one shift each)
  and HyperFD's offline set.
- :mod:`~trainables.detection.formats`: the WIDER-Face annotation format and folders a user brings.
- :mod:`~trainables.detection.metrics`: IoU, NMS, AP@50.
- :mod:`~trainables.detection.model`: the anchor-based single-stage detector built from a ``DetectorArch``.
- :mod:`~trainables.detection.train`: train and evaluate one detector for a configuration.
"""
