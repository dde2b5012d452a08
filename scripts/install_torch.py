"""Install torch into a virtual environment without a surprise CUDA download.

    python scripts/install_torch.py SPEC [--index URL] [pip options...]

PyPI's Linux wheel of torch is a CUDA build of several GB; a CPU-only box wants the
CPU build (about 200 MB) from PyTorch's CPU index. In order:
1. torch already installed and satisfying SPEC: nothing to do.
2. the indexes pip is configured with already offer a CPU build (a version ending in
   `+cpu`, e.g. a local wheel folder), or this is not Linux (PyPI's macOS and Windows
   wheels are CPU builds): install that.
3. `--index` given (the Makefile passes PyTorch's CPU index): install SPEC from it.
4. that failed or was not given: PyPI's default build, after a message that says so
   and how to avoid it.
On a GPU box pass `--index ''` (the Makefile: `make TORCH_INDEX= …`) for pip's default,
CUDA build, or install your own torch first: step 1 keeps it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys


def pip(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], text=True, capture_output=capture)


def installed_satisfies(spec: str) -> bool:
    probe = ("import sys; from importlib.metadata import version; from pip._vendor.packaging.requirements import Requirement; "
             f"sys.exit(0 if Requirement({spec!r}).specifier.contains(version('torch'), prereleases=True) else 1)")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def offered_version(spec: str, extra: list[str]) -> str | None:
    """The torch version pip would install from its configured indexes (no download of the wheel)."""
    res = pip("install", "--dry-run", "--no-deps", "--quiet", "--report", "-", *extra, spec, capture=True)
    if res.returncode != 0:
        return None
    try:
        return json.loads(res.stdout)["install"][0]["metadata"]["version"]
    except (ValueError, KeyError, IndexError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", help="e.g. torch==2.13.0")
    ap.add_argument("--index", default="", help="an index of CPU builds to try when pip's own offers none ('' = skip)")
    args, extra = ap.parse_known_args()
    if installed_satisfies(args.spec):
        print(f"install_torch: the installed torch satisfies {args.spec}; kept")
        return 0
    version = offered_version(args.spec, extra)
    if version and (version.endswith("+cpu") or not sys.platform.startswith("linux")):
        print(f"install_torch: torch {version} (a CPU build) from pip's configured indexes")
        return pip("install", "-q", *extra, args.spec).returncode
    if args.index:
        print(f"install_torch: {args.spec}, CPU build, from {args.index}")
        if pip("install", "-q", "--index-url", args.index, *extra, args.spec).returncode == 0:
            return 0
        print(f"install_torch: could not install {args.spec} from {args.index} (offline, or no such release there).",
              file=sys.stderr)
    print(f"install_torch: installing {args.spec} as pip's default indexes offer it"
          f"{' (' + version + ')' if version else ''}: on Linux that is a CUDA build of several GB. "
          "For the CPU build, install torch from PyTorch's CPU index first "
          "(pip install torch --index-url https://download.pytorch.org/whl/cpu) and run make again.", file=sys.stderr)
    return pip("install", "-q", *extra, args.spec).returncode


if __name__ == "__main__":
    sys.exit(main())
