"""HyperFD (online AutoML for face detection)."""
