"""evalq's on-disk cache: converted models and quantized checkpoints.

Root: $EVALQ_CACHE, else $XDG_CACHE_HOME/evalq, else ~/.cache/evalq.
Every entry is built into a temporary folder and renamed into place under a
lock, so a run killed mid-build never leaves a half-written entry behind.
"""
from __future__ import annotations

import fcntl
import hashlib
import multiprocessing
import os
import shutil
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


def cache_root() -> Path:
    if os.environ.get("EVALQ_CACHE"):
        return Path(os.environ["EVALQ_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evalq"


def cache_dir(kind: str) -> Path:
    path = cache_root() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def file_lock(target: Path) -> Iterator[None]:
    lock_path = target.with_name(target.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class BuildError(RuntimeError):
    pass


def _child(fn: Callable[..., Any], tmp: Path, parent_pid: int, threads: int | None, args: tuple) -> None:
    from evalq.lifeline import die_with_parent

    die_with_parent(parent_pid)
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        fn(tmp, *args)
    except BaseException as exc:  # report to the parent, whatever it was
        (tmp / ".evalq-build-error").write_text(
            f"{exc.__class__.__name__}: {exc}\n" + "".join(traceback.format_exception(exc))
        )
        raise SystemExit(1) from None


def build_once(target: Path, fn: Callable[..., Any], *args: Any, isolated: bool = False, threads: int | None = None) -> bool:
    """Build folder `target` with fn(tmp_folder, *args) unless it exists.

    `isolated` runs fn in a spawned child process: its memory (a dequantized
    float32 model, GPTQ's Hessians) is not counted in this process's peak RSS;
    `threads`: torch's pool there (None: every core).
    Returns True when it built, False when the entry was already there.
    """
    if target.exists():
        return False
    with file_lock(target):
        if target.exists():
            return False
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            if isolated:
                proc = multiprocessing.get_context("spawn").Process(target=_child, args=(fn, tmp, os.getpid(), threads, args))
                proc.start()
                proc.join()
                error_file = tmp / ".evalq-build-error"
                if proc.exitcode != 0:
                    detail = error_file.read_text() if error_file.exists() else f"exit code {proc.exitcode}"
                    raise BuildError(detail.splitlines()[0] if detail else "build failed")
            else:
                fn(tmp, *args)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return True


_sha_memo: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's content, remembered (here and on disk) by path, size and
    mtime: a weights file is hashed once per change, not once per run."""
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key in _sha_memo:
        return _sha_memo[memo_key]
    memo = cache_dir("sha256") / hashlib.sha256(repr(memo_key).encode()).hexdigest()
    try:
        known = memo.read_text().strip()
    except OSError:
        known = ""
    if len(known) != 64:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        known = digest.hexdigest()
        tmp = memo.with_name(f"{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(known)
        os.replace(tmp, memo)
    _sha_memo[memo_key] = known
    return known
