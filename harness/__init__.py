"""evalq: at the same memory and money, is a big model quantized better than a small one at full precision?

Data flows one way: matrix (matrix.py) → cells (cell.py) → a worker process per
cell (orchestrator.py, worker.py) → measurements (measure/) → the database
(store/) → `evalq results` and the static leaderboard (evalq.leaderboard).
"""
__version__ = "0.1.0"
