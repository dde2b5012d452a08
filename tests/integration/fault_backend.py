"""A backend registered only in tests (through EVALQ_BACKENDS): each variant
injects one real fault inside the real worker. The model is a tiny local one,
so a cell that survives its fault finishes in seconds."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from evalq.backends.base import BackendConfig, Loaded, ModelFiles
from evalq.resources import Resources
from evalq.backends.fp16 import FP16Backend, FP16Config


class FaultConfig(BackendConfig):
    seconds: float = 0.0
    megabytes: int = 0


class _Fault:
    name: ClassVar[str] = "fault"
    Config: ClassVar[type[BackendConfig]] = FaultConfig
    libraries: ClassVar[tuple[str, ...]] = ("torch", "transformers")

    def unavailable_reason(self, device: str) -> str | None:
        return None

    def check_model(self, cfg: Any, model_config: dict) -> str | None:
        return None

    def load(self, files: ModelFiles, cfg: FaultConfig, resources: Resources, workdir: str) -> Loaded:
        self.inject(cfg)
        return FP16Backend().load(files, FP16Config(dtype="float32"), resources, workdir)

    def inject(self, cfg: FaultConfig) -> None:
        pass


class Ok(_Fault):
    pass


class Slow(_Fault):
    def inject(self, cfg: FaultConfig) -> None:
        time.sleep(cfg.seconds)


class RaiseInMeasurement(_Fault):
    def load(self, files: ModelFiles, cfg: FaultConfig, resources: Resources, workdir: str) -> Loaded:
        loaded = super().load(files, cfg, resources, workdir)

        def fail(*_: Any) -> None:
            raise RuntimeError("injected fault in a forward pass")

        loaded.model.register_forward_pre_hook(fail)  # the accuracy step's first forward raises
        return loaded


class SigKill(_Fault):
    def inject(self, cfg: FaultConfig) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class Exit137(_Fault):
    def inject(self, cfg: FaultConfig) -> None:
        sys.stdout.flush()
        os._exit(137)


class Hang(_Fault):
    def inject(self, cfg: FaultConfig) -> None:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        Path(os.environ["FAULT_PID_DIR"], "hang-child.pid").write_text(str(child.pid))
        time.sleep(3600)


class Flood(_Fault):
    def inject(self, cfg: FaultConfig) -> None:
        line = "flood " * 170 + "\n"  # ~1 KB
        for i in range(cfg.megabytes * 1024):
            (sys.stdout if i % 2 else sys.stderr).write(line)
        print("END OF FLOOD", flush=True)


class OutOfMemory(_Fault):
    """Caps the address space a little above what is in use, then allocates past it."""

    def inject(self, cfg: FaultConfig) -> None:
        import torch

        in_use = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = in_use + cfg.megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
        torch.empty(4 * cap, dtype=torch.uint8)


FAULTS = {
    "fault-ok": "Ok", "fault-slow": "Slow", "fault-raise": "RaiseInMeasurement", "fault-sigkill": "SigKill",
    "fault-exit137": "Exit137", "fault-hang": "Hang", "fault-flood": "Flood", "fault-oom": "OutOfMemory",
}
EVALQ_BACKENDS = ",".join(f"{name}=fault_backend:{cls}" for name, cls in FAULTS.items())
