"""Real-kernel experiments in tdlab- network namespaces."""
