"""Serving under load, without a model: the load generator's arrivals and figures, what a
sweep concludes, and the server hygiene against a fake server whose faults are real
(it exits, hangs mid-answer with a child in its group, or answers every request with an
error): the sweep ends with the reason and no process is left behind."""
from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from evalq.matrix import ServeSettings
from evalq.serve.load import Load, Record, percentile, summarize
from evalq.serve.process import ServeError, ServeTimeout, free_port
from evalq.serve.sweep import Server, conclusions, requests_at, sweep

FAKE = Path(__file__).with_name("fake_server.py")
SLO = {"ttft_ms": 500.0, "tpot_ms": 50.0}


def settings(**kw) -> ServeSettings:
    base = dict(path=str(FAKE), rates=[4, "inf"], duration_s=1, max_requests=6, prompt_tokens=8, output_tokens=5,
                request_timeout_s=3, start_timeout_s=20, single_stream=0)
    return ServeSettings(**{**base, **kw})


def fake(mode: str) -> Server:
    port = free_port()
    return Server([sys.executable, str(FAKE), mode, str(port)], port, "fake", "fake-model")


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def started_pids(log: Path) -> list[int]:
    """The fake server's pid (from the sweep's process) and the child it reports in its log."""
    return [int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("child ")]


# ---- the load generator's arithmetic

def test_poisson_arrivals_are_seeded_and_at_the_rate():
    load = Load(rate=5.0, requests=4000, output_tokens=4, seed=7)
    a = load.arrivals()
    assert a == Load(rate=5.0, requests=4000, output_tokens=4, seed=7).arrivals()
    assert a != Load(rate=5.0, requests=4000, output_tokens=4, seed=8).arrivals()
    gaps = np.diff(a)
    assert abs(gaps.mean() - 0.2) < 0.02  # 1 / rate
    assert abs(gaps.std() / gaps.mean() - 1) < 0.1  # exponential: coefficient of variation 1
    assert Load(rate=math.inf, requests=3, output_tokens=4, seed=7).arrivals() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("q", [50, 90, 99])
def test_percentile_is_numpys(q):
    xs = list(np.random.default_rng(q).exponential(100, 37))
    assert percentile(xs, q) == pytest.approx(np.percentile(xs, q))
    assert percentile([], q) is None


def test_summary_counts_goodput_by_both_slos():
    recs = [Record(sent=0, first=0.1, last=0.1 + 0.02 * 4, tokens=5),  # TTFT 100, TPOT 20: good
            Record(sent=0, first=0.9, last=0.9 + 0.02 * 4, tokens=5),  # TTFT 900: misses
            Record(sent=0, first=0.1, last=0.1 + 0.08 * 4, tokens=5),  # TPOT 80: misses
            Record(sent=0, first=0.2, last=0.2, tokens=1),  # one token: judged by TTFT alone
            Record(sent=0, error="HTTP 500: boom")]
    s = summarize(recs, wall_s=2.0, rate=3.0, slo=SLO)
    assert (s["requests"], s["completed"], s["errors"]) == (5, 4, 1)
    assert s["goodput"] == pytest.approx(2 / 2.0) and s["slo_met"] == pytest.approx(2 / 5)
    assert s["output_tokens_per_s"] == pytest.approx(16 / 2.0)
    assert s["ttft_ms_p50"] == pytest.approx(150) and s["tpot_ms_p50"] == pytest.approx(20)
    assert s["error_examples"] == ["HTTP 500: boom"] and s["within_slo"] is False  # an error: never within
    clean = summarize(recs[:1] + recs[3:4], wall_s=1.0, rate=math.inf, slo=SLO)
    assert clean["within_slo"] is True and clean["rate"] is None


def test_conclusions_take_the_highest_rate_within_the_slo():
    def step(rate, ok, tok):
        return {"rate": rate, "within_slo": ok, "goodput": tok / 10, "requests_per_s": tok / 5, "output_tokens_per_s": tok}
    c = conclusions([step(0.5, True, 10), step(2, True, 30), step(4, False, 45), step(None, False, 40)])
    assert c["max_rate_within_slo"] == 2 and c["goodput_at_max_rate"] == 3.0
    assert c["saturation_output_tokens_per_s"] == 45 and c["saturation_requests_per_s"] == 9
    assert conclusions([step(1, True, 5), step(None, True, 9)])["max_rate_within_slo"] == "inf"
    assert conclusions([step(1, False, 5)])["max_rate_within_slo"] is None


def test_requests_per_rate_are_bounded():
    s = settings(duration_s=10, max_requests=12)
    assert [requests_at(r, s) for r in (0.05, 0.5, 5.0, math.inf)] == [1, 5, 12, 12]


@pytest.mark.parametrize("bad, expect", [({"rates": []}, "at least 1"), ({"rates": [1, -2]}, "above 0"),
                                         ({"rates": [1, 1]}, "twice"), ({"output_tokens": 1}, "greater than 1")])
def test_settings_refuse(bad, expect):
    with pytest.raises(ValueError, match=expect):
        settings(**bad)


# ---- a sweep through a (fake) server: measured, and the faults

def test_sweep_measures_what_the_server_does(tmp_path):
    server = fake("ok")
    log = tmp_path / "server.log"
    seen = []
    out = sweep(server, [f"p{i}" for i in range(13)], settings(single_stream=2), seed=1, log=log,
                on_step=lambda label, step: seen.append((label, step["completed"])))
    assert seen == [("one request at a time", 2), ("rate 4/s", 4), ("rate inf/s", 6)]  # as its errors name them
    sent = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("prompt ")]
    assert sorted(sent) == sorted(f"p{i}" for i in range(13))  # warm-up, single stream, each rate: never one twice
    alone = out["single_stream"]
    assert alone["completed"] == 2 and 12 <= alone["tpot_ms_p50"] < 30  # one at a time: the fake's 15 ms, give or take jitter
    assert [s["rate"] for s in out["steps"]] == [4.0, None]
    for step in out["steps"]:
        assert step["completed"] == step["requests"] == (4 if step["rate"] else 6) and step["errors"] == 0
        assert step["ttft_ms_p50"] >= 35 and step["tpot_ms_p50"] >= 12  # the fake's own delays (40, 15 ms), give or take the stream's jitter
    assert all(r["tokens"] == 5 for recs in out["records"] for r in recs)  # every streamed token counted
    assert out["peak_rss_bytes"] > 1e6
    with pytest.raises(OSError):  # the port is free again: the server is gone
        import urllib.request
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=1)


def test_tokens_are_counted_from_the_usage_where_a_chunk_carries_two(tmp_path):
    from evalq.serve.sweep import OPENAI_EXTRAS

    server = fake("merged")
    server.extra_body = OPENAI_EXTRAS
    out = sweep(server, ["p"], settings(rates=[4]), seed=1, log=tmp_path / "server.log")
    assert [r["tokens"] for r in out["records"][0]] == [5] * 4  # 3 chunks, 5 tokens
    server = fake("merged")
    out = sweep(server, ["p"], settings(rates=[4]), seed=1, log=tmp_path / "server.log")
    assert [r["tokens"] for r in out["records"][0]] == [3] * 4  # without the usage: chunks, too few


def test_the_load_runs_where_an_event_loop_already_runs(tmp_path):
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    async def inside_a_loop():  # a notebook's cell, or a test after playwright's sync API started
        return sweep(fake("ok"), ["p"], settings(rates=[4]), seed=1, log=tmp_path / "server.log")

    with ThreadPoolExecutor(1) as pool:  # a thread of its own: this one may already run playwright's loop
        out = pool.submit(asyncio.run, inside_a_loop()).result()
    assert out["steps"][0]["completed"] == 4 and out["steps"][0]["errors"] == 0


def test_a_server_that_fails_to_start(tmp_path):
    with pytest.raises(ServeError, match=r"exited with status 3 before it was ready: .*could not load the weights"):
        sweep(fake("exit"), ["p"], settings(), seed=1, log=tmp_path / "server.log")


def test_a_server_that_hangs_mid_answer_is_killed_with_its_group(tmp_path):
    log = tmp_path / "server.log"
    with pytest.raises(ServeTimeout, match=r"stopped answering at the warm-up request: no complete answer within 3 s"):
        sweep(fake("hang"), ["p"], settings(), seed=1, log=log)
    (child,) = started_pids(log)
    assert gone(child), "the hung server's child outlived it"


def test_a_server_that_answers_errors(tmp_path):
    with pytest.raises(ServeError, match=r"every request failed at the warm-up request: HTTP 500: .*illegal memory access"):
        sweep(fake("error"), ["p"], settings(), seed=1, log=tmp_path / "server.log")
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(FAKE) in " ".join(p.info["cmdline"] or [])
                and p.status() != psutil.STATUS_ZOMBIE]


def test_the_server_dies_with_the_process_that_started_it(tmp_path):
    """A worker killed mid-sweep (the cell's timeout kills its group, not the server's) takes its server with it."""
    port = free_port()
    code = (f"import sys, os; from evalq.serve.process import ServerProcess; from pathlib import Path\n"
            f"p = ServerProcess([sys.executable, {str(FAKE)!r}, 'ok', '{port}'], {port}, Path({str(tmp_path / 'log')!r}))\n"
            f"p.start(); print(p.proc.pid, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.split()[0])
    assert gone(pid), "the server outlived the process that started it"


def serve_phase(monkeypatch, tmp_path, run) -> dict:
    """The child's serve phase (run.child.measure_serve) with `run(out_dir)` in place of building the cell's
    server from its model: what the cell would store as its `serve`."""
    from evalq.resources import Resources
    from evalq.run import child

    monkeypatch.setattr(child, "_serve_sweep", lambda cell, files, backend, details, out_dir, resources, speed: run(out_dir))
    return child.measure_serve(None, None, None, {}, tmp_path, Resources(threads={"speed": 1}), {})


def fake_processes(server: Server) -> list[psutil.Process]:
    """The fake servers still running on `server`'s port (the last word of their command line)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        argv = p.info["cmdline"] or []
        if str(FAKE) in argv and argv[-1:] == [str(server.port)] and p.status() != psutil.STATUS_ZOMBIE:
            found.append(p)
    return found


def test_a_hung_server_is_stored_as_the_serve_phases_timeout_and_a_failed_one_as_its_error(monkeypatch, tmp_path):
    """The cell's other phases stand: the serve phase returns its end instead of raising it."""
    hanging, erring = fake("hang"), fake("error")
    hung = serve_phase(monkeypatch, tmp_path, lambda out: sweep(hanging, ["p"], settings(), seed=1, log=out / "s.log"))
    assert (hung["status"], hung["server"], hung["steps"]) == ("timeout", "fake", [])
    assert hung["error"].startswith("ServeTimeout: the server stopped answering at the warm-up request")
    failed = serve_phase(monkeypatch, tmp_path, lambda out: sweep(erring, ["p"], settings(), seed=1, log=out / "s.log"))
    assert failed["status"] == "error" and "HTTP 500" in failed["error"] and failed["max_rate_within_slo"] is None
    assert not fake_processes(hanging) and not fake_processes(erring)


def test_a_port_taken_by_another_server_is_a_failure_never_that_servers_figures(tmp_path):
    """free_port's port taken before the server could listen (another run, another user): the other
    process answers /health, but only the cell's own server's answer counts."""
    from evalq.serve.process import ServerProcess

    port = free_port()
    with ServerProcess([sys.executable, str(FAKE), "ok", str(port)], port, tmp_path / "decoy.log"):
        server = Server([sys.executable, str(FAKE), "ok", str(port)], port, "fake", "fake-model")
        with pytest.raises(ServeError, match=rf"exited with status 1 before it was ready \(port {port} is in use by another "
                                             rf"process\): .*Address already in use") as failed:
            sweep(server, ["p"], settings(), seed=1, log=tmp_path / "server.log")
        assert failed.value.partial["steps"] == []
        assert "prompt " not in (tmp_path / "decoy.log").read_text()  # not one request went to the other server


def test_a_server_killed_mid_sweep_keeps_the_steps_measured_before(monkeypatch, tmp_path):
    import signal

    server = fake("ok")

    def kill_after_the_first_rate(label: str, step: dict) -> None:
        if label == "rate 4/s":
            for process in fake_processes(server):
                process.send_signal(signal.SIGKILL)

    out = serve_phase(monkeypatch, tmp_path, lambda out: sweep(server, [f"p{i}" for i in range(20)], settings(),
                                                              seed=1, log=out / "s.log", on_step=kill_after_the_first_rate))
    assert out["status"] == "error"
    assert out["error"].startswith("ServeError: the server exited with status -9 during the load")
    assert [(s["rate"], s["completed"]) for s in out["steps"]] == [(4.0, 4)]  # the rate before its death, kept
    assert out["max_rate_within_slo"] == 4.0 and out["seconds"] > 0


def test_one_hung_request_among_live_ones_times_out_alone(tmp_path):
    started, server = time.monotonic(), fake("hang-one")
    out = sweep(server, [f"p{i}" for i in range(20)], settings(rates=["inf"], request_timeout_s=2), seed=1,
                log=tmp_path / "server.log")
    (step,) = out["steps"]
    assert (step["requests"], step["completed"], step["errors"]) == (6, 5, 1)
    assert step["error_examples"] == ["no complete answer within 2 s"] and step["within_slo"] is False
    assert time.monotonic() - started < 20  # the hung one waited for its timeout, not for the server
    assert not fake_processes(server)


def test_the_load_generators_own_error_never_kills_the_cell(monkeypatch, tmp_path):
    from evalq.serve import sweep as sweep_module

    def broken(*args, **kwargs):
        raise RuntimeError("aiohttp: Session is closed")

    monkeypatch.setattr(sweep_module, "drive", broken)
    server = fake("ok")
    out = serve_phase(monkeypatch, tmp_path, lambda out: sweep(server, ["p"], settings(), seed=1, log=out / "s.log"))
    assert (out["status"], out["error"], out["steps"]) == ("error", "RuntimeError: aiohttp: Session is closed", [])
    assert not fake_processes(server)


def test_a_failed_sweep_is_shown_with_its_cells_other_figures(tmp_path):
    """What the cell stored (status ok, its accuracy, the serve phase's failure after one rate) as
    `evalq results` and the board show it."""
    from typer.testing import CliRunner

    from evalq.cell import expand
    from evalq.cli import app
    from evalq.matrix import read_matrix
    from evalq.store import Store

    root = Path(__file__).resolve().parents[2]
    matrix, suites = read_matrix(root / "examples" / "showcase.yaml")
    cell = next(c for c in expand(matrix, suites, lambda spec: "r", device="cpu") if c.serve)
    step = summarize([Record(sent=0, first=0.1, last=0.18, tokens=5)] * 4, wall_s=1.0, rate=4.0, slo=SLO)
    serve = {"server": "llama.cpp", "single_stream": None, "steps": [step], "status": "error", "threads": 1,
             "error": "ServeError: the server exited with status -9 during the load: <killed>", **conclusions([step])}
    db = str(tmp_path / "e.db")
    Store(db).record(cell, {"status": "ok", "metrics": {"t": {"acc,none": 0.5}}, "serve": serve})
    shown = CliRunner().invoke(app, ["results", "--db", db])
    assert shown.exit_code == 0, shown.output
    assert "failed (error)" in shown.output and "exited with status -9 during the load" in shown.output
    assert "4/4" in shown.output  # the rate measured before the failure
    built = CliRunner().invoke(app, ["leaderboard", "build", "--db", db, "--out", str(tmp_path / "site")])
    assert built.exit_code == 0, built.output
    page = (tmp_path / "site" / "index.html").read_text()
    # the table's data, JSON in the page (placed as text by its script: "<" never reaches the HTML as markup)
    assert ('"20.0 (failed)", "llama.cpp server, 1 threads; the sweep failed (error): ServeError: the server exited with '
            'status -9 during the load: \\u003ckilled\\u003e"') in page
    assert "<killed>" not in page
