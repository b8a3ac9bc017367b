"""PyTorch models built from search-space encodings (one module per model family)."""

from __future__ import annotations

from trainables.classification.model import GlobalCNN, build_global_cnn

__all__ = ["GlobalCNN", "build_global_cnn"]
