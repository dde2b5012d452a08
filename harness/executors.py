"""Where cells run. The orchestrator claims a cell, hands it to an executor and
records what comes back; only the orchestrator writes the database.

- LocalExecutor: one cell at a time, in a worker process on this machine.
- RayExecutor: each cell is a Ray task asking for the CPUs or GPUs it needs
  (GPUs: as many as the memory planner predicts; the worker then shards the
  model over them with accelerate's device_map="auto"). The task runs the same
  `run_child` as the local executor, so timeouts, process-group kills and
  failure statuses are the same; what Ray itself reports (a node lost, a task
  cancelled) becomes a `killed` or `error` end.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Protocol

from evalq.cell import Cell
from evalq.outcome import CellOutcome, Plan, Status
from evalq.threads import available
from evalq.run.launch import ChildEnd, run_child

Phase = Callable[[str], None]
# What a Ray worker needs from the driver's environment to run a cell the same way.
FORWARDED_ENV_PREFIXES = ("HF_", "EVALQ_", "TRANSFORMERS_", "TOKENIZERS_")
FORWARDED_ENV = ("PYTHONPATH",)


class Executor(Protocol):
    slots: int  # cells in flight at most
    name: str

    def start(self, cell: Cell, on_phase: Phase) -> None: ...
    def in_flight(self) -> int: ...
    def wait(self) -> list[tuple[Cell, ChildEnd]]: ...
    def close(self) -> None: ...


class LocalExecutor:
    """Runs each cell in a worker process here, one at a time."""

    name = "local"
    slots = 1

    def __init__(self, echo: bool = False, child_module: str = "evalq.run.child"):
        self.echo = echo
        self.child_module = child_module
        self._queued: list[tuple[Cell, Phase]] = []

    def start(self, cell: Cell, on_phase: Phase) -> None:
        self._queued.append((cell, on_phase))

    def in_flight(self) -> int:
        return len(self._queued)

    def wait(self) -> list[tuple[Cell, ChildEnd]]:
        cell, on_phase = self._queued.pop(0)
        return [(cell, run_child(cell, on_phase=on_phase, echo=self.echo, child_module=self.child_module))]

    def close(self) -> None:
        self._queued.clear()


def _ray_task(cell_json: str, child_module: str, gpus: int, max_memory_per_gpu: int | None) -> ChildEnd:
    """Runs inside a Ray worker: the cell's own child process, as the local executor does, given the
    GPUs Ray gave the task (it has set CUDA_VISIBLE_DEVICES to them); threads resolved on this node."""
    cell = Cell.model_validate_json(cell_json)
    return run_child(cell, child_module=child_module, resources=cell.resources(gpus, max_memory_per_gpu))


def _gpu_memory_probe() -> int:
    import torch

    return torch.cuda.get_device_properties(0).total_memory


def forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES) or k in FORWARDED_ENV}


class RayExecutor:
    """Runs each cell as a Ray task; results come back to this process, which alone records them."""

    name = "ray"

    def __init__(self, address: str | None, plan: Callable[[Cell], Plan | None], child_module: str = "evalq.run.child",
                 gpu_memory: int | None = None, log: Callable[[str], None] = print):
        import ray

        self.ray = ray
        self.plan = plan
        self.child_module = child_module
        ray.init(address=address, runtime_env={"env_vars": forwarded_env()}, log_to_driver=False,
                 logging_level="ERROR", **({} if address else {"include_dashboard": False}))
        resources = ray.cluster_resources()
        self.cpus, self.gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
        self.gpu_memory = gpu_memory
        if self.gpus and not gpu_memory:
            self.gpu_memory = ray.get(ray.remote(num_gpus=1)(_gpu_memory_probe).remote())
        self.slots = max(1, self.gpus or self.cpus)
        self._task = ray.remote(_ray_task)
        self._futures: dict[Any, tuple[Cell, float]] = {}
        self._done: list[tuple[Cell, ChildEnd]] = []  # ended without a task: nothing in the cluster can hold them
        log(f"ray cluster: {self.cpus} CPUs, {self.gpus} GPUs"
            + (f" of {self.gpu_memory / 1e9:.1f} GB" if self.gpus and self.gpu_memory else ""))

    def placement(self, cell: Cell) -> tuple[dict[str, Any], int, int | None]:
        """Ray resource options, GPUs to shard over, and the weights' share of each GPU."""
        if cell.device != "cuda":
            return {"num_cpus": self.cpus_for(cell)}, 0, None
        plan = self.plan(cell)
        gpus, per_gpu = 1, None
        if plan and self.gpu_memory:
            from evalq.planner import gpus_needed

            gpus = gpus_needed(plan, self.gpu_memory) or max(1, self.gpus)
            # each GPU keeps room for what is not weights: KV cache, activations, the framework
            per_gpu = self.gpu_memory - (plan.predicted_peak_bytes - plan.predicted_weights_bytes)
        return {"num_cpus": 1, "num_gpus": gpus}, gpus, per_gpu

    def cpus_for(self, cell: Cell) -> int:
        """The most threads any phase of the cell uses (Cell.threads); a phase left at
        "every core" asks for this machine's cores, at most the cluster's CPUs."""
        explicit = [n for n in (cell.perf.threads, cell.eval.threads) if n]
        every_core = [min(available(), max(1, self.cpus))] if len(explicit) < 2 else []
        return max(explicit + every_core)

    def start(self, cell: Cell, on_phase: Phase) -> None:
        options, gpus, per_gpu = self.placement(cell)
        have = {"num_gpus": self.gpus, "num_cpus": self.cpus}
        short = [f"{v} {k.removeprefix('num_')[:-1].upper()}s" for k, v in options.items() if v > have[k]]
        if short:  # Ray would queue it forever
            error = (f"needs {' and '.join(short)}; the Ray cluster has {self.cpus} CPUs and {self.gpus} GPUs")
            self._done.append((cell, ChildEnd(CellOutcome(status=Status.skipped, error=error))))
            return
        on_phase(f"queued on ray ({', '.join(f'{k}={v}' for k, v in options.items())})")
        ref = self._task.options(**options, max_retries=0, name=cell.name).remote(
            cell.model_dump_json(), self.child_module, gpus, per_gpu)
        self._futures[ref] = (cell, time.monotonic())

    def in_flight(self) -> int:
        return len(self._futures) + len(self._done)

    def wait(self) -> list[tuple[Cell, ChildEnd]]:
        if self._done:
            done, self._done = self._done, []
            return done
        ready, _ = self.ray.wait(list(self._futures), num_returns=1)
        out = []
        for ref in ready:
            cell, started = self._futures.pop(ref)
            try:
                end = self.ray.get(ref)
            except self.ray.exceptions.RayError as exc:  # the task, not the cell, failed: a lost node, OOM killer
                lost = isinstance(exc, (self.ray.exceptions.WorkerCrashedError, self.ray.exceptions.NodeDiedError,
                                        self.ray.exceptions.OutOfMemoryError))
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
                end = ChildEnd(CellOutcome(status=Status.killed if lost else Status.error,
                                            error=f"ray: {exc.__class__.__name__}: {first}"[:2000]),
                                wall_seconds=time.monotonic() - started)
            out.append((cell, end))
        return out

    def close(self) -> None:
        for ref in self._futures:
            self.ray.cancel(ref, force=True)  # their cells stay `running` under this dead run: the next run takes them
        self._futures.clear()
        self.ray.shutdown()


def executor_for(name: str, address: str | None, plan: Callable[[Cell], Plan | None], echo: bool = False,
                  child_module: str = "evalq.run.child", gpu_memory: int | None = None,
                  log: Callable[[str], None] = print) -> Executor:
    if name == "local":
        return LocalExecutor(echo, child_module)
    if name != "ray":
        raise ValueError(f"unknown executor {name!r}: local or ray")
    try:
        import ray  # noqa: F401
    except ImportError:
        log("Ray is not installed (pip install 'evalq[ray]'): running the cells here, with the local executor")
        return LocalExecutor(echo, child_module)
    return RayExecutor(address, plan, child_module, gpu_memory, log)
