"""Executor decisions that need no cluster: resources per cell, and cells no node could hold."""
from __future__ import annotations

from pathlib import Path

from evalq.cell import expand
from evalq.executors import RayExecutor
from evalq.matrix import load_matrix
from evalq.threads import available

ROOT = Path(__file__).resolve().parents[2]


def executor(cpus: int, gpus: int, gpu_memory: int | None, plan=lambda cell: None) -> RayExecutor:
    ex = RayExecutor.__new__(RayExecutor)  # the decisions only: no Ray cluster behind it
    ex.cpus, ex.gpus, ex.gpu_memory, ex.plan = cpus, gpus, gpu_memory, plan
    ex._futures, ex._done = {}, []
    return ex


def demo_cell(device: str = "cpu", threads: int = 1):
    matrix, suites = load_matrix(ROOT / "examples" / "showcase.yaml")
    cell = expand(matrix, suites, lambda spec: "sha256:abc", device=device)[0]
    return cell.model_copy(update={"perf": cell.perf.model_copy(update={"threads": threads})})


def test_a_cell_asking_more_cpus_than_the_cluster_has_ends_skipped_instead_of_queueing_forever():
    ex = executor(cpus=2, gpus=0, gpu_memory=None)
    cell = demo_cell(threads=4)
    ex.start(cell, lambda phase: None)
    assert ex.in_flight() == 1
    [(done, end)] = ex.wait()
    assert done is cell and end.status == "skipped" and "needs 4 CPUs" in end.outcome.error
    assert ex.resources(demo_cell(threads=2))[0] == {"num_cpus": 2}


def test_ray_reserves_the_threads_of_the_busiest_phase():
    ex = executor(cpus=64, gpus=0, gpu_memory=None)
    cell = demo_cell(threads=1)  # timing on 1 thread; eval.threads null: accuracy on every core
    assert ex.cpus_for(cell) == min(available(), 64) == max(cell.thread_plan().values())
    pinned = cell.model_copy(update={"eval": cell.eval.model_copy(update={"threads": 3})})
    assert ex.cpus_for(pinned) == 3 == pinned.threads("accuracy") and ex.resources(pinned)[0] == {"num_cpus": 3}


def test_gpus_per_task_come_from_the_planner():
    plan = {"predicted_peak_bytes": 150e9, "predicted_weights_bytes": 140e9, "overhead_bytes": 1e9}
    ex = executor(cpus=64, gpus=8, gpu_memory=80e9, plan=lambda cell: plan)
    options, gpus, per_gpu = ex.resources(demo_cell(device="cuda"))
    assert options == {"num_cpus": 1, "num_gpus": 2} and gpus == 2  # ceil((150 - 1) / (80 - 1))
    assert per_gpu == 80e9 - 10e9  # room left on each GPU for what is not weights
    small = executor(cpus=64, gpus=1, gpu_memory=80e9, plan=lambda cell: plan)
    small.start(demo_cell(device="cuda"), lambda phase: None)
    [(_, end)] = small.wait()
    assert end.status == "skipped" and "needs 2 GPUs" in end.outcome.error


def test_a_cell_given_several_gpus_is_sharded_by_accelerate(monkeypatch):
    from evalq.backends.hf import placement

    assert placement("cpu") == {"device_map": "cpu"}
    assert placement("cuda") == {"device_map": "cuda"}  # one GPU: the whole model on it
    monkeypatch.setenv("EVALQ_GPUS", "2")
    assert placement("cpu") == {"device_map": "cpu"}
    assert placement("cuda") == {"device_map": "auto"}
    monkeypatch.setenv("EVALQ_MAX_MEMORY_PER_GPU", "70000000000")
    assert placement("cuda") == {"device_map": "auto", "max_memory": {0: 70_000_000_000, 1: 70_000_000_000}}
