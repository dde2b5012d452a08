"""A real local Ray cluster (2 CPU workers, started with `ray start`) runs a
small matrix, faults included; what it stores equals what the local executor
stores, and a second run through Ray finds nothing left to do."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalq.cli import app
from evalq.store import Store

pytestmark = pytest.mark.integration
ray = pytest.importorskip("ray")

HERE = Path(__file__).resolve().parent
RAY = str(Path(sys.executable).with_name("ray"))
runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster(monkeypatch, fault_backends):
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    temp = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must fit in 107 bytes
    port = free_port()
    subprocess.run([RAY, "start", "--head", "--num-cpus=2", "--num-gpus=0", f"--port={port}", "--include-dashboard=false",
                    f"--temp-dir={temp}", "--object-store-memory=200000000", "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


def comparable(db: str) -> dict[str, tuple]:
    """What must not depend on where a cell ran (timings do)."""
    out = {}
    for r in Store(db).cells():
        q = (r.result or {}).get("quality") or {}
        error = (r.error or "").split(":")[0]
        out[f"{r.model}/{r.variant}"] = (r.status, error, r.metrics, r.weights_bytes, r.dtype,
                                         q.get("ppl"), q.get("kld_mean"), q.get("same_top1"))
    return out


def test_ray_cluster_stores_what_the_local_executor_stores(tmp_path, tiny_model_factory, ray_cluster, wikitext, pg_url):
    """The local executor into SQLite, the Ray executor into PostgreSQL: the same figures."""
    tiny = tiny_model_factory()
    matrix = tmp_path / "m.yaml"
    matrix.write_text(f"""name: ray-test
models:
  - name: tiny
    path: {tiny}
variants:
  fp16: {{}}
  fault-ok: {{}}
  fault-raise: {{}}
  fault-sigkill: {{}}
  fault-hang: {{}}
suites: [tiny]
quality: {{path: {wikitext}, tokens: 1024}}
perf: {{prompt_tokens: 8, new_tokens: 4, batch_sizes: [1], warmup: 0, repeats: 1, threads: 1}}
eval: {{batch_size: 8, limit: 10}}
timeout_s: 45
""")
    local_db, ray_db = str(tmp_path / "local.db"), pg_url
    started = time.monotonic()
    local = runner.invoke(app, ["run", "--matrix", str(matrix), "--db", local_db])
    local_s = time.monotonic() - started
    assert local.exit_code == 1, local.output  # the failing cells: error, killed, timeout (--fail-on)
    started = time.monotonic()
    on_ray = runner.invoke(app, ["run", "--matrix", str(matrix), "--db", ray_db, "--executor", "ray", "--address", ray_cluster])
    ray_s = time.monotonic() - started
    assert on_ray.exit_code == 1 and "3 cell(s) ended in error, killed, timeout" in on_ray.output, on_ray.output
    assert "ray cluster: 2 CPUs" in on_ray.output
    print(f"\nlocal executor {local_s:.1f} s, ray executor (2 CPU workers) {ray_s:.1f} s: {local_s / ray_s:.2f}×")

    stored_local, stored_ray = comparable(local_db), comparable(ray_db)
    assert {k: v[0] for k, v in stored_ray.items()} == {"tiny/fp16": "ok", "tiny/fault-ok": "ok", "tiny/fault-raise": "error",
                                                        "tiny/fault-sigkill": "killed", "tiny/fault-hang": "timeout"}
    assert stored_ray == stored_local
    assert stored_ray["tiny/fp16"][5] > 1  # a real perplexity, measured through Ray

    again = runner.invoke(app, ["run", "--matrix", str(matrix), "--db", ray_db, "--executor", "ray", "--address", ray_cluster])
    assert again.exit_code == 0 and "5 already stored" in again.output, again.output
    assert all(r.attempts == 1 for r in Store(ray_db).cells())
