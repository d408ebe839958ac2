"""Reconstruction engines, installed as ``livenight.engines``."""
