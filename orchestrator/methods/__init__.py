"""The search methods, one module (or sub-package) each."""
