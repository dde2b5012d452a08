"""Write constraints.txt from the versions installed in this environment: the lock
that `make demo` and `make test` install with (library versions measured together).

Run it deliberately, after a fresh `make install` whose demo and tests passed:
    .venv/bin/python scripts/freeze_constraints.py
`pip install evalq` stays unpinned; only the Makefile reads this file.
"""
from __future__ import annotations

import platform
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "constraints.txt"


def pins(freeze: str) -> list[str]:
    out = []
    for line in freeze.splitlines():
        line = line.strip()
        if not line or line.startswith(("-e", "#")) or line.lower().startswith("evalq"):
            continue
        local = re.match(r"([A-Za-z0-9_.-]+) @ file://.*?/[A-Za-z0-9_.]+?-(\d[^/#]*?)\.tar\.gz", line)
        if local:  # built here from its source distribution (llama-cpp-python): pin the version
            line = f"{local.group(1)}=={local.group(2)}"
        elif " @ " in line:
            raise SystemExit(f"cannot pin {line!r}: not a released version")
        # torch's local label (+cpu) would refuse a CUDA build of the same release on a GPU box
        out.append(re.sub(r"^(torch[A-Za-z_-]*==[^+]+)\+\S+$", r"\1", line))
    return sorted(out, key=str.lower)


def main() -> None:
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    header = [
        "# The library versions `make demo` and `make test` install (pip -c): measured together.",
        f"# Written by scripts/freeze_constraints.py on {date.today()}, Python {platform.python_version()}, "
        f"{platform.machine()}; regenerate deliberately. `make CONSTRAINTS= …` installs unpinned.",
    ]
    OUT.write_text("\n".join(header + pins(freeze)) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
