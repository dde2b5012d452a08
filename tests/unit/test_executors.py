"""Executor decisions that need no cluster: resources per cell, and cells no node could hold."""
from __future__ import annotations

import os
from pathlib import Path

from evalq.cell import expand
from evalq.executors import RayExecutor
from evalq.matrix import read_matrix
from evalq.outcome import Plan
from evalq.threads import available

ROOT = Path(__file__).resolve().parents[2]


def executor(cpus: int, gpus: int, gpu_memory: int | None, plan=lambda cell: None) -> RayExecutor:
    ex = RayExecutor.__new__(RayExecutor)  # the decisions only: no Ray cluster behind it
    ex.cpus, ex.gpus, ex.gpu_memory, ex.plan = cpus, gpus, gpu_memory, plan
    ex._futures, ex._done = {}, []
    return ex


def demo_cell(device: str = "cpu", threads: int = 1):
    matrix, suites = read_matrix(ROOT / "examples" / "showcase.yaml")
    cell = expand(matrix, suites, lambda spec: "sha256:abc", device=device)[0]
    return cell.model_copy(update={"perf": cell.perf.model_copy(update={"threads": threads})})


def test_a_cell_asking_more_cpus_than_the_cluster_has_ends_skipped_instead_of_queueing_forever():
    ex = executor(cpus=2, gpus=0, gpu_memory=None)
    cell = demo_cell(threads=4)
    ex.start(cell, lambda phase: None)
    assert ex.in_flight() == 1
    [(done, end)] = ex.wait()
    assert done is cell and end.status == "skipped" and "needs 4 CPUs" in end.outcome.error
    assert ex.placement(demo_cell(threads=2))[0] == {"num_cpus": 2}


def test_ray_reserves_the_threads_of_the_busiest_phase():
    ex = executor(cpus=64, gpus=0, gpu_memory=None)
    cell = demo_cell(threads=1)  # timing on 1 thread; eval.threads null: accuracy on every core
    assert ex.cpus_for(cell) == min(available(), 64) == max(cell.thread_plan().values())
    pinned = cell.model_copy(update={"eval": cell.eval.model_copy(update={"threads": 3})})
    assert ex.cpus_for(pinned) == 3 == pinned.threads("accuracy") and ex.placement(pinned)[0] == {"num_cpus": 3}


def test_gpus_per_task_come_from_the_planner():
    plan = Plan(predicted_peak_bytes=150 * 10**9, predicted_weights_bytes=140 * 10**9, overhead_bytes=10**9)
    ex = executor(cpus=64, gpus=8, gpu_memory=80e9, plan=lambda cell: plan)
    options, gpus, per_gpu = ex.placement(demo_cell(device="cuda"))
    assert options == {"num_cpus": 1, "num_gpus": 2} and gpus == 2  # ceil((150 - 1) / (80 - 1))
    assert per_gpu == 80e9 - 10 * 10**9  # room left on each GPU for what is not weights
    small = executor(cpus=64, gpus=1, gpu_memory=80e9, plan=lambda cell: plan)
    small.start(demo_cell(device="cuda"), lambda phase: None)
    [(_, end)] = small.wait()
    assert end.status == "skipped" and "needs 2 GPUs" in end.outcome.error


def test_a_cell_given_several_gpus_is_sharded_by_accelerate():
    from evalq.backends.hf import placement
    from evalq.resources import Resources

    assert placement(Resources("cpu")) == {"device_map": "cpu"}
    assert placement(Resources("cuda")) == {"device_map": "cuda"}  # one GPU: the whole model on it
    assert placement(Resources("cpu", gpus=2)) == {"device_map": "cpu"}
    assert placement(Resources("cuda", gpus=2)) == {"device_map": "auto"}
    assert placement(Resources("cuda", gpus=2, max_memory_per_gpu=70_000_000_000)) == {
        "device_map": "auto", "max_memory": {0: 70_000_000_000, 1: 70_000_000_000}}


def test_the_ray_task_hands_its_gpus_to_the_child_in_resources(monkeypatch):
    """What a Ray task gave the cell reaches its child process (tests/unit/echo_child.py, which
    stores what it was handed) as Resources, not through the environment."""
    from evalq import executors
    from evalq.resources import Resources

    monkeypatch.setenv("PYTHONPATH", f"{Path(__file__).resolve().parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cell = demo_cell(device="cuda")
    seen = [executors._ray_task(cell.model_dump_json(), "echo_child", gpus, 70_000_000_000).outcome.details
            for gpus in (2, 1)]
    given = [Resources(**d["resources"]) for d in seen]
    assert [(r.device, r.gpus, r.max_memory_per_gpu) for r in given] == [("cuda", 2, 70_000_000_000), ("cuda", 1, None)]
    assert given[0].threads == cell.thread_plan() and seen[0]["evalq_env"] == []
