"""A stand-in child: `python -m echo_child CELL.json OUT_DIR PARENT_PID` stores what the
launcher gave it as its outcome's details: the resources file, the parent's pid, and which of
the environment variables that carried them before are set."""
import json
import os
import sys
from pathlib import Path

cell_path, out_dir, parent_pid = sys.argv[1:]
given = json.loads(Path(out_dir, "resources.json").read_text())
evalq_env = sorted(k for k in ("EVALQ_THREADS", "EVALQ_GPUS", "EVALQ_MAX_MEMORY_PER_GPU", "EVALQ_PARENT_PID") if k in os.environ)
Path(out_dir, "result.json").write_text(json.dumps({"status": "ok", "details": {
    "resources": given, "parent_pid": int(parent_pid), "evalq_env": evalq_env}}))
