"""Small real data sets shipped with skvi (no network needed)."""

from ._loaders import load_old_faithful

__all__ = ["load_old_faithful"]
