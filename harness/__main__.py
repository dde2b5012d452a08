"""`python -m evalq`: the same command as `evalq`."""
from evalq.cli import app

app(prog_name="evalq")
