"""CPU threads: one resolved count per phase of a cell (Cell.threads), applied
here to every library that computes — torch's intra-op pool, a llama.cpp
model's context, and $EVALQ_THREADS, which the quantizers (gptqmodel's workers,
llama.cpp's quantize) and evalq's child processes read."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

ENV = "EVALQ_THREADS"
PHASES = ("prepare", "accuracy", "speed", "quality")


def available() -> int:
    """The cores this process may run on: its CPU affinity (taskset, a cgroup cpuset, a
    Slurm allocation), not every core of the host, which would oversubscribe them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def resolve(n: int | None) -> int:
    """A setting's thread count: None means every core this process may use."""
    return n or available()


def current() -> int:
    """The count the enclosing phase set (every core outside one)."""
    return resolve(int(os.environ.get(ENV) or 0) or None)


def apply_from_env() -> None:
    """In a child process (build_once's): torch's pool as the parent's phase set it."""
    if os.environ.get(ENV):
        import torch

        torch.set_num_threads(current())


@contextmanager
def using(n: int, model: Any = None) -> Iterator[int]:
    """Every library's threads set to n for the block, restored after; yields n."""
    import torch

    before, env_before = torch.get_num_threads(), os.environ.get(ENV)
    model_before = getattr(model, "threads", None) if hasattr(model, "set_threads") else None
    torch.set_num_threads(n)
    os.environ[ENV] = str(n)
    if model_before is not None:
        model.set_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
        if env_before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = env_before
        if model_before is not None:
            model.set_threads(model_before)
