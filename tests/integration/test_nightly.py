"""Three real nightlies over two tiny models: the first runs everything, the
second follows a change to one model's weights and must name exactly that
model's cells, the third changes nothing and runs nothing."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalq.cli import app
from evalq.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from postgres_server import PG_PASSWORD  # noqa: E402

pytestmark = pytest.mark.integration

runner = CliRunner()


def scale_lm_head(folder: Path, factor: float) -> None:
    """The fixture change: a sharper output layer, as a bad fine-tune would leave it."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    with torch.no_grad():
        model.lm_head.weight.mul_(factor)
    model.save_pretrained(folder)


def test_two_nightlies_report_exactly_the_cells_that_changed(tmp_path, tiny_model_factory, wikitext, pg_url):
    """On PostgreSQL (a team's shared database; the SQLite nightly is tests/unit/test_drift.py's)."""
    models = {}
    for name in ("tiny-a", "tiny-b"):
        models[name] = tmp_path / name
        shutil.copytree(tiny_model_factory(), models[name])
    listed = "".join(f"  - name: {n}\n    path: {p}\n" for n, p in models.items())
    matrix = tmp_path / "nightly.yaml"
    matrix.write_text(f"""name: nightly-test
models:
{listed}variants: {{fp16: {{}}, int8: {{}}}}
suites: [tiny]
quality: {{path: {wikitext}, tokens: 1024}}
perf: {{prompt_tokens: 8, new_tokens: 4, batch_sizes: [1], warmup: 0, repeats: 2, threads: 1}}
eval: {{batch_size: 8, limit: 20}}
timeout_s: 300
""")
    db, site = pg_url, tmp_path / "site"
    args = ["nightly", "--matrix", str(matrix), "--db", db, "--site", str(site)]

    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    report1 = json.loads((site / "report.json").read_text())
    assert report1["previous_run_id"] is None and report1["ran"] == {"ok": 4}
    assert {c["status"] for c in report1["cells"]} == {"new"}

    scale_lm_head(models["tiny-b"], 40.0)
    second = runner.invoke(app, args)
    report2 = json.loads((site / "report.json").read_text())
    print("\n" + (site / "report.md").read_text())
    assert second.exit_code == 1, second.output  # a regression: the scheduler alerts
    assert report2["previous_run_id"] == report1["run_id"] and report2["ran"] == {"ok": 2} and report2["reused"] == 2
    assert sorted(report2["changed"]) == ["tiny-b · fp16", "tiny-b · int8"]
    assert sorted(report2["regressions"]) == ["tiny-b · fp16", "tiny-b · int8"]
    cells = {f"{c['model']} · {c['variant']}": c for c in report2["cells"]}
    assert not cells["tiny-a · fp16"]["reran"] and cells["tiny-a · fp16"]["status"] == "unchanged"
    assert not cells["tiny-a · int8"]["changes"]
    b = cells["tiny-b · fp16"]
    assert b["reran"] and any(w.startswith("revision: local:") for w in b["why"])
    ppl = next(c for c in b["changes"] if c["metric"] == "text_ppl")
    assert ppl["verdict"] == "regression" and ppl["after"] > 2 * ppl["before"] and ppl["p"] < 0.01
    assert "tiny-b · fp16" in (site / "report.md").read_text() and "tiny-a" not in report2["changed"]
    assert (site / "nightly" / str(report2["run_id"]) / "report.json").exists()

    # the history page charts both nights; the board shows only the current cells
    history = (site / "history.html").read_text()
    assert "tiny-b: perplexity of the quality text" in history and "night " + str(report2["run_id"]) in history
    results = json.loads((site / "results.json").read_text())
    assert len(results) == 4 and len(Store(db).cells()) == 6  # tiny-b's old cells stay for the history

    assert PG_PASSWORD not in first.output + second.output and PG_PASSWORD not in (site / "report.md").read_text()

    third = runner.invoke(app, args)
    report3 = json.loads((site / "report.json").read_text())
    assert third.exit_code == 0, third.output
    assert report3["ran"] == {} and report3["reused"] == 4 and report3["changed"] == []
