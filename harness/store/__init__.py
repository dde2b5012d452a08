"""Results storage: SQLAlchemy 2 on SQLite by default, or PostgreSQL."""
from evalq.store.db import SchemaTooNew, Store

__all__ = ["SchemaTooNew", "Store"]
