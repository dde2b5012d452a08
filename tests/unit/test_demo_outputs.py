"""What every reader of the store prints from a real demo database stays the same, byte for byte:
`evalq results` (table, CSV, JSON, --all), the board's results.json/results.csv, lm-eval export
(its date and its own timing aside); and a merge of the database into an empty one reads back the same.

The database is `make demo`'s, stored by evalq 3c1b410 on the Intel Xeon (SmolLM2 and Gemma-3,
fp16 / gguf-q4_k_m / hqq-2, suite demo). The expected outputs were written from it before the
readers moved to one typed record; rewrite them only for a change meant to alter what is printed:

    .venv/bin/python tests/unit/test_demo_outputs.py --write
"""
from __future__ import annotations

import hashlib
import json
import lzma
import re
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalq.cli import app

DATA = Path(__file__).parent / "data"
DEMO_DB = DATA / "demo-3c1b410.db.xz"
EXPECTED = DATA / "demo_outputs"
runner = CliRunner()


def demo_db(folder: Path) -> Path:
    path = folder / "demo.db"
    path.write_bytes(lzma.decompress(DEMO_DB.read_bytes()))
    return path


def cli(*args: str) -> str:
    res = runner.invoke(app, list(args), env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert res.exit_code == 0, res.output
    return res.stdout


def exported(folder: Path) -> str:
    """One line per exported file: its name and the sha256 of its text, lm-eval's date stamp
    and the export's own evaluation time taken out."""
    lines = []
    for f in sorted(folder.rglob("*.json*")):
        date = re.search(r"_(\d{4}-\d\d-\d\dT[\d.-]+)\.jsonl?$", f.name).group(1)
        text = f.read_text().replace(date, "DATE")
        if f.suffix == ".json":
            results = json.loads(text)
            results.pop("total_evaluation_time_seconds")
            text = json.dumps(results, sort_keys=True)
        lines.append(f"{hashlib.sha256(text.encode()).hexdigest()}  {f.relative_to(folder).as_posix().replace(date, 'DATE')}")
    return "\n".join(lines) + "\n"


def outputs(tmp: Path) -> dict[str, str]:
    db = str(demo_db(tmp))
    out = {"results.txt": cli("results", "--db", db),
           "results.csv": cli("results", "--db", db, "-f", "csv"),
           "results.json": cli("results", "--db", db, "-f", "json"),
           "results-all.json": cli("results", "--db", db, "-f", "json", "--all")}
    cli("leaderboard", "build", "--db", db, "--out", str(tmp / "site"))
    out["board-results.json"] = (tmp / "site" / "results.json").read_text()
    out["board-results.csv"] = (tmp / "site" / "results.csv").read_text()
    cli("export", "--db", db, "--out", str(tmp / "export"))
    out["export.sha256"] = exported(tmp / "export")
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The demo database's folder, and what every reader printed from it."""
    tmp = tmp_path_factory.mktemp("demo")
    return tmp, outputs(tmp)


def test_every_reader_prints_what_it_printed_before(demo):
    _, got = demo
    assert sorted(got) == sorted(p.name for p in EXPECTED.iterdir())
    for name, text in got.items():
        assert text == (EXPECTED / name).read_text(), f"{name} changed: diff it against {EXPECTED / name}"


def test_a_merge_into_an_empty_database_reads_back_as_the_source(demo):
    tmp, got = demo
    merged = str(tmp / "merged.db")
    cli("merge", "--into", merged, str(tmp / "demo.db"))
    assert cli("results", "--db", merged, "-f", "json", "--all") == got["results-all.json"]


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        written = outputs(Path(tmp))
    shutil.rmtree(EXPECTED, ignore_errors=True)
    EXPECTED.mkdir()
    for name, text in written.items():
        (EXPECTED / name).write_text(text)
    print(f"wrote {len(written)} files to {EXPECTED}")
