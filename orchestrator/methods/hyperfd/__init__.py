"""HyperFD (online AutoML for face detection), by concern.

Paper: ``papers/hyperfd-online-automl-face-detection-supplement.txt``.

- :mod:`~orchestrator.methods.hyperfd.plan`: datasets, candidate pools and the training protocol of a config;
- :mod:`~orchestrator.methods.hyperfd.benchmark`: the detector trial and the cross-dataset benchmark build
  (``facenas benchmark build``);
- :mod:`~orchestrator.methods.hyperfd.online`: the ranker's warm-up, the online protocol (Algorithm 1) and the
  warm-started search on one dataset;
- :mod:`~orchestrator.methods.hyperfd.table`: Table 7.
"""
