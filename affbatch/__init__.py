"""affbatch: per-frame valence/arousal traces for archives of videos (the Aff-Wild2 method)."""

from affbatch.metrics import ccc

__version__ = "0.1.0"

__all__ = ["__version__", "ccc"]
