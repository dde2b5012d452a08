"""Night-to-night comparison: each kind of figure judged against its own noise,
the statuses of cells, the report's exit code, the lock, and the history chart."""
from __future__ import annotations

import sys
from datetime import datetime
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from evalq.cli import app
from evalq.drift import Change, compare_nights, figures_of, judge_figure, key_difference
from evalq.record import record_of
from evalq.store.tables import CellRow
from evalq.nightly import Busy, Report, nightly_lock
from evalq.verdicts import mcnemar_exact
from evalq.results import current_rows

NO_PAIRS = lambda task, metric: None  # noqa: E731


def flipped(right_to_wrong: int, wrong_to_right: int, n: int = 100, metric: str = "acc"):
    """The engine's answer for two nights whose answers differ only in these flips."""
    from evalq.verdicts import compare_documents

    last = {(str(i), "h"): 1.0 if i < 50 + right_to_wrong else 0.0 for i in range(n)}
    tonight = dict(last)
    for i in range(50, 50 + right_to_wrong):
        tonight[(str(i), "h")] = 0.0
    for i in range(n - wrong_to_right, n):
        tonight[(str(i), "h")] = 1.0
    asked = []

    def paired(task, m):
        asked.append(m)
        return compare_documents({task: tonight}, {task: last}).tasks[task] if m == metric else None
    paired.asked = asked
    return paired


def fig(value, **kw):
    return {"value": value, "better": kw.pop("better", "higher"), "test": kw.pop("test", "stderr"), **kw}


def test_accuracy_is_judged_paired_when_the_answers_are_there():
    a, b = fig(0.60, test="accuracy", stderr=0.05, task="t"), fig(0.50, test="accuracy", stderr=0.05, task="t")
    # 12 answers right→wrong and 2 wrong→right: McNemar p = 0.013, significant at 0.05, not at 0.01
    change = judge_figure("t:acc", a, b, 0.05, flipped(12, 2))
    assert isinstance(change, Change) and change.verdict == "regression" and change.p == pytest.approx(mcnemar_exact(12, 2))
    assert "paired on 100 documents: -10.0 points (95 % CI" in change.test
    assert judge_figure("t:acc", a, b, 0.01, flipped(12, 2)) is None
    # unpaired, the same 10 points against a combined stderr of 0.0707: z = 1.41, not significant
    assert judge_figure("t:acc", a, b, 0.05, NO_PAIRS) is None
    assert judge_figure("t:acc", a, fig(0.30, test="accuracy", stderr=0.05), 0.05, NO_PAIRS).verdict == "regression"
    # ARC's figure is acc_norm: the answers are compared by acc_norm, not by acc
    by_norm = flipped(12, 2, metric="acc_norm")
    assert isinstance(judge_figure("t:acc_norm", a, b, 0.05, by_norm), Change) and by_norm.asked == ["acc_norm"]


def test_perplexity_on_the_log_scale_and_lower_is_better():
    a = fig(20.0, better="lower", test="log_stderr", stderr=0.01)
    assert judge_figure("ppl", a, fig(20.2, better="lower", test="log_stderr", stderr=0.01), 0.01, NO_PAIRS) is None  # ln 1.01 / 0.0141
    better = judge_figure("ppl", a, fig(19.0, better="lower", test="log_stderr", stderr=0.01), 0.01, NO_PAIRS)
    assert better.verdict == "improvement" and better.p == pytest.approx(2.87e-4, rel=0.01)  # z = 3.63
    assert isinstance(judge_figure("ppl", fig(20.0, test="log_stderr"), fig(25.0, test="log_stderr"), 0.01, NO_PAIRS), str)


def test_speed_by_an_exact_rank_test_on_the_repeats():
    five = [98.0, 99.0, 100.0, 101.0, 102.0]
    a = fig(100.0, test="runs", runs=five)
    assert judge_figure("tok/s", a, fig(99.5, test="runs", runs=[97.5, 98.5, 99.5, 100.5, 101.5]), 0.01, NO_PAIRS) is None
    slower = judge_figure("tok/s", a, fig(80.0, test="runs", runs=[78.0, 79.0, 80.0, 81.0, 82.0]), 0.01, NO_PAIRS)
    assert slower.verdict == "regression" and slower.p == pytest.approx(2 / 252)  # every split but 2 less extreme
    slower_ttft = judge_figure("ttft", fig(10.0, better="lower", test="runs", runs=[9.8, 9.9, 10.0, 10.1, 10.2]),
                        fig(12.0, better="lower", test="runs", runs=[11.8, 11.9, 12.0, 12.1, 12.2]), 0.01, NO_PAIRS)
    assert slower_ttft.verdict == "regression"
    # 3 repeats a night: the most extreme split has p = 2/20 = 0.1, it can never be significant at 0.01
    assert "no ordering of so few can reach" in judge_figure("tok/s", fig(100.0, test="runs", runs=[99.0, 100.0, 101.0]),
                                                      fig(50.0, test="runs", runs=[49.0, 50.0, 51.0]), 0.01, NO_PAIRS)
    # significant but within the 5 % floor: not a change a nightly should wake anyone for
    assert judge_figure("tok/s", a, fig(97.0, test="runs", runs=[96.0, 96.5, 97.0, 97.2, 97.5]), 0.01, NO_PAIRS) is None


def test_rank_test_matches_scipy():
    from scipy.stats import PermutationMethod, mannwhitneyu

    from evalq.drift import rank_test_p

    a, b = [3.1, 2.9, 3.3, 3.0, 3.4, 2.8], [3.6, 3.2, 3.8, 3.5, 3.7]
    assert rank_test_p(a, b) == pytest.approx(mannwhitneyu(a, b, method="exact").pvalue)
    tied = [1.0, 2.0, 2.0, 3.0]
    assert rank_test_p(tied, [2.0, 4.0, 5.0]) == pytest.approx(mannwhitneyu(tied, [2.0, 4.0, 5.0], method=PermutationMethod(n_resamples=10**6)).pvalue)


def test_memory_exact_weights_and_tolerant_peak():
    assert judge_figure("w", fig(1000, better="lower", test="exact"), fig(1001, better="lower", test="exact"), 0.01, NO_PAIRS).verdict == "regression"
    peak = fig(1000, better="lower", test="tolerance")
    assert judge_figure("p", peak, fig(1040, better="lower", test="tolerance"), 0.01, NO_PAIRS) is None
    assert judge_figure("p", peak, fig(900, better="lower", test="tolerance"), 0.01, NO_PAIRS).verdict == "improvement"


def record(key, status="ok", ppl=20.0, variant="int8", **extra):
    """A stored row, as a CellRecord."""
    result = {"status": status, "error": None if status == "ok" else "boom",
              "metrics": {"t": {"acc": 0.5, "acc_stderr": 0.05}}, "weights_bytes": 100, "peak_memory_bytes": 1000,
              "quality": {"ppl": ppl, "nll_stderr": 0.01, "kld_mean": 0.01, "kld_stderr": 0.001, "same_top1": 0.9,
                          "same_top1_stderr": 0.01},
              "speed": {"by_batch": {"1": {"decode_tokens_per_s": 10.0, "decode_tokens_per_s_runs": [10.0], "ttft_ms": 5.0,
                                           "ttft_ms_runs": [5.0]}}}, **extra}
    row = CellRow(key=key, matrix="m", model="m", variant=variant, status=status, error=result["error"], revision="r",
                  cell={}, metrics=result["metrics"], weights_bytes=100, peak_memory_bytes=1000, result=result)
    return record_of(row)


def test_compare_names_the_cells_that_moved_and_why():
    before = {("m", "int8"): figures_of(record("k1")), ("m", "nf4"): figures_of(record("k2")),
              ("m", "gptq-4"): figures_of(record("k3")), ("m", "fp16"): figures_of(record("k4", status="error")),
              ("gone", "int8"): figures_of(record("k5"))}
    after = {("m", "int8"): figures_of(record("k1")),  # not re-run: identical
             ("m", "nf4"): figures_of(record("k2b", ppl=30.0)),  # re-run, worse
             ("m", "gptq-4"): figures_of(record("k3b", status="error")),  # re-run, now fails
             ("m", "fp16"): figures_of(record("k4b")),  # fixed
             ("new", "int8"): figures_of(record("k6")),
             ("busy", "int8"): figures_of(record("k7", status="running"))}
    cells = {"k2": {"revision": "a", "libraries": {"torch": "2.12"}}, "k2b": {"revision": "a", "libraries": {"torch": "2.13"}}}
    drift = {(d.model, d.variant): d for d in compare_nights(before, after, {"k2b", "k3b", "k4b", "k6"}, cells.get, lambda k, t: [])}
    assert drift[("m", "int8")].status == "unchanged" and not drift[("m", "int8")].reran
    nf4 = drift[("m", "nf4")]
    assert nf4.status == "regression" and [c.metric for c in nf4.changes] == ["text_ppl"]
    assert nf4.why == ["libraries.torch: 2.12 → 2.13"]
    assert nf4.unjudged == []  # the other figures did not move: nothing to judge
    assert drift[("m", "gptq-4")].status == "regression" and drift[("m", "gptq-4")].alert
    assert drift[("m", "fp16")].status == "fixed" and not drift[("m", "fp16")].alert
    assert drift[("gone", "int8")].status == "gone" and drift[("new", "int8")].status == "new"
    assert drift[("busy", "int8")].status == "running" and not drift[("busy", "int8")].alert  # another run holds it
    report = Report(2, 1, "mx", "t0", "t1", {"ok": 3, "error": 1}, 1, list(drift.values()), 0.01)
    assert report.exit_code == 1
    assert sorted(report.as_dict()["changed"]) == ["m · fp16", "m · gptq-4", "m · nf4"]
    assert "libraries.torch: 2.12 → 2.13" in report.markdown()
    quiet = Report(3, 2, "mx", "t0", "t1", {}, 5, [drift[("m", "int8")]], 0.01)
    assert quiet.exit_code == 0 and quiet.as_dict()["changed"] == []


def test_key_difference_in_words():
    assert key_difference({"revision": "a", "options": {"bits": 4, "group": 64}, "matrix": "x"},
                          {"revision": "b", "options": {"bits": 4, "group": 128}, "matrix": "y"}) == [
        "options.group: 64 → 128", "revision: a → b"]


def test_a_second_nightly_on_the_same_database_exits_0_and_runs_nothing(tmp_path):
    db = tmp_path / "e.db"
    with nightly_lock(tmp_path / "e.db.nightly.lock"):
        with pytest.raises(Busy):
            with nightly_lock(tmp_path / "e.db.nightly.lock"):
                pass
        res = CliRunner().invoke(app, ["nightly", "--matrix", str(tmp_path / "missing.yaml"), "--db", str(db),
                                       "--site", str(tmp_path / "site")])
    assert res.exit_code == 0 and "another evalq nightly holds" in res.output, res.output
    assert not db.exists()  # it never opened the database
    with nightly_lock(tmp_path / "e.db.nightly.lock"):  # released by the first holder
        pass


def test_the_newest_cell_of_each_slot_supersedes_older_keys():
    def row(key, variant, day):
        return SimpleNamespace(key=key, matrix="m", model="a", variant=variant, cell={}, started_at=datetime(2026, 1, day),
                               finished_at=None)
    rows = [row("old", "fp16", 1), row("int8", "int8", 1), row("new", "fp16", 2)]
    assert [r.key for r in current_rows(rows)] == ["int8", "new"]


def test_history_chart_rings_a_regression_and_escapes_names():
    from evalq.leaderboard import charts

    svg = str(charts.history("<m>: perplexity", [(1, "2026-11-01"), (2, "2026-11-02")],
                             {"fp16": [(1, 20.0, False, None), (2, 25.0, True, None)], "<v>": [(1, 21.0, False, 0.5)]}))
    assert "&lt;m&gt;" in svg and "<m>" not in svg and "&lt;v&gt;" in svg
    assert svg.count('stroke="#d62728"') == 1 and "night 2 (2026-11-02): 25 — regression" in svg
    assert "<polyline" in svg
    assert svg.count('class="error-bar"') == 1 and "night 1 (2026-11-01): 21 (95 % CI 20.5–21.5)" in svg


def test_history_charts_give_accuracies_their_stored_interval_and_nothing_else():
    from evalq.leaderboard import charts
    from evalq.leaderboard.render import history_charts

    runs = [SimpleNamespace(id=i, started_at=datetime(2026, 11, i), summary={}) for i in (1, 2)]
    figures = lambda acc: {"metrics": {  # noqa: E731 - as drift.figures_of stores them
        "arc_easy": {"value": acc, "stderr": 0.02, "test": "accuracy"},
        "peak_memory_bytes": {"value": 9e8, "stderr": 1e7, "test": "relative"}}}
    cells = [SimpleNamespace(run_id=i, model="m", variant="fp16", figures=figures(acc)) for i, acc in ((1, 0.50), (2, 0.55))]
    (accuracy, acc_points), (memory, _) = [(str(svg), pts) for svg, pts in history_charts(runs, cells)["m"]]
    assert [p[3] for p in acc_points] == [0.50, 0.55] and acc_points[0][4] == charts.Z95 * 0.02  # its table
    half = charts.Z95 * 0.02
    assert accuracy.count('class="error-bar"') == 2
    assert f"(95 % CI {0.55 - half:.4g}–{0.55 + half:.4g})" in accuracy
    assert 'class="error-bar"' not in memory and "900" in memory  # bytes shown in MB, no interval


def test_ray_missing_falls_back_to_the_local_executor(monkeypatch):
    from evalq.executors import LocalExecutor, executor_for

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    said = []
    executor = executor_for("ray", None, lambda cell: None, log=said.append)
    assert isinstance(executor, LocalExecutor) and "pip install 'evalq[ray]'" in said[0]


def test_the_three_schedulers_call_the_same_evalq_nightly():
    import configparser
    import re
    import shlex
    from pathlib import Path

    import typer.main
    import yaml

    folder = Path(__file__).resolve().parents[2] / "scripts" / "nightly"
    command = typer.main.get_command(app).commands["nightly"]
    options = {opt for p in command.params for opt in p.opts}
    calls = {}
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(folder / "evalq-nightly.service")
    calls["systemd"] = unit["Service"]["ExecStart"]
    timer = configparser.ConfigParser(interpolation=None)
    timer.read(folder / "evalq-nightly.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"
    calls["cron"] = next(line for line in (folder / "crontab").read_text().splitlines() if re.match(r"^[\d*]", line))
    workflow = yaml.safe_load((folder / "github-nightly.yml").read_text())
    calls["ci"] = next(s["run"] for s in workflow["jobs"]["nightly"]["steps"] if s.get("name") == "evalq nightly")
    for where, line in calls.items():
        words = shlex.split(line.split("evalq nightly", 1)[1].split("&&")[0].split(">>")[0].split("${{")[0])
        given = {w for w in words if w.startswith("--")}
        assert {"--matrix", "--db", "--site"} <= given and given <= options, (where, given - options)
