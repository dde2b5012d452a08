"""The environment a cell ran in: hardware, driver and library versions, evalq's git sha."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from evalq.cpu import HARDWARE_FLAGS, cpu_features
from evalq.threads import available

# Versions that change accuracy or speed of every cell; each backend adds its own.
COMMON_LIBRARIES = ("torch", "transformers", "lm_eval")


def library_versions(names: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


RECORDED_LIBRARIES = ("torch", "transformers", "accelerate", "bitsandbytes", "gptqmodel", "llama_cpp_python", "lm_eval", "evalq")


def evalq_git_sha() -> str | None:
    if os.environ.get("EVALQ_GIT_SHA"):
        return os.environ["EVALQ_GIT_SHA"]
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_class(model: str, flags: list[str] | tuple[str, ...] | frozenset[str]) -> str:
    found = [f for f in HARDWARE_FLAGS if f in flags]
    return f"{model} · {' '.join(found) or 'baseline ISA'}"


def gpu_class(name: str, compute_capability: str) -> str:
    return f"{name} · sm {compute_capability}"


# The class of a CUDA cell expanded where no GPU is visible: a worker on a real GPU
# refuses it (its numbers would be keyed for no machine).
NO_GPU_HERE = "CUDA GPU not visible where the matrix was expanded"


def hardware_class(device: str) -> str:
    """What a cell's numbers depend on besides its libraries: the GPU and its compute
    capability, or the CPU model and the vector features that pick its kernels."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():  # planned here (a dry run, a Ray driver) for GPUs elsewhere
            return NO_GPU_HERE
        major, minor = torch.cuda.get_device_capability(0)
        return gpu_class(torch.cuda.get_device_name(0), f"{major}.{minor}")
    from evalq.cpu import cpu_flags

    return cpu_class(cpu_model(), cpu_flags())


def hardware_of(env: dict[str, Any]) -> str | None:
    """The hardware class recorded in a stored cell's env (None: not recorded)."""
    if env.get("gpu") and env.get("compute_capability"):
        return gpu_class(env["gpu"], env["compute_capability"])
    if env.get("cpu"):
        return cpu_class(env["cpu"], (env.get("cpu_features") or {}).get("flags") or [])
    return None


def environment(device: str, gpus: int = 1) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_available": available(),  # this process's CPU affinity: what "every core" means
        "cpu_features": cpu_features(),  # the flags that decide kernels, and the dtype `auto` means here
        "device": device,
        "libraries": library_versions(RECORDED_LIBRARIES),
        "evalq_git_sha": evalq_git_sha(),
        "executor_host": platform.node(),  # on a Ray cluster: the node that ran the cell
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu=props.name,
            gpu_memory_bytes=props.total_memory,
            gpu_count=torch.cuda.device_count(),
            gpus_used=gpus,  # >1: sharded by accelerate (an executor's choice: Resources.gpus)
            cuda=torch.version.cuda,
            compute_capability=f"{props.major}.{props.minor}",
        )
        try:
            import pynvml

            pynvml.nvmlInit()
            env["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception:  # noqa: BLE001 - nvidia-ml-py is optional
            env["driver"] = None
    return env
