"""CPU threads: one resolved count per phase of a cell (Cell.threads, carried to the
child in Resources), applied here to torch's intra-op pool and a llama.cpp model's
context; a quantizer is handed its count (Resources.threads_for("prepare"))."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

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


@contextmanager
def using(n: int, model: Any = None) -> Iterator[int]:
    """torch's pool (and a llama.cpp model's) set to n threads for the block, restored after; yields n."""
    import torch

    before = torch.get_num_threads()
    model_before = getattr(model, "threads", None) if hasattr(model, "set_threads") else None
    torch.set_num_threads(n)
    if model_before is not None:
        model.set_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
        if model_before is not None:
            model.set_threads(model_before)
