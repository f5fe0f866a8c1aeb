"""evla_ref: the PyTorch reference of the evla policy (see python/README.md)."""
