"""Quantization backends, one module per variant, behind `base.Backend`."""
from evalq.backends.base import Backend, BackendConfig, Loaded, ModelFiles, backend_names, get_backend

__all__ = ["Backend", "BackendConfig", "Loaded", "ModelFiles", "backend_names", "get_backend"]
