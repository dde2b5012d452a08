"""What one cell may use, passed in the open: the device, CPU threads by phase, and the
GPUs an executor gave it. The launcher writes it beside the cell; the child reads it once
and hands it to `backend.load` and to each measuring phase. Environment variables are
set only for libraries that read them (torch's pool is set through its API)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from evalq.threads import PHASES, available


@dataclass(frozen=True)
class Resources:
    device: str = "cpu"  # "cpu" or "cuda"
    threads: dict[str, int] = field(default_factory=dict)  # phase (threads.PHASES) → CPU threads; absent: every core
    gpus: int = 1  # >1: an executor gave this cell several GPUs, the model split over them by accelerate
    max_memory_per_gpu: int | None = None  # bytes of weights each of those GPUs may hold

    def threads_for(self, phase: str) -> int:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}: one of {', '.join(PHASES)}")
        return self.threads.get(phase) or available()

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Resources:
        return cls(**json.loads(text))
