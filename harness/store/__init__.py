"""Results storage: SQLAlchemy 2 on SQLite by default (any SQLAlchemy URL works)."""
from evalq.store.db import SchemaTooNew, Store

__all__ = ["SchemaTooNew", "Store"]
