"""Pure-PyTorch models (no drivers, engines or Qt)."""
