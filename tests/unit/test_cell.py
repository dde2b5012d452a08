"""Cell keys: stable for the same content, different for anything that changes numbers."""
from __future__ import annotations

from pathlib import Path

from evalq.cell import Cell, expand
from evalq.matrix import load_matrix

ROOT = Path(__file__).resolve().parents[2]


def demo_cells(revision="sha256:abc"):
    matrix, suites = load_matrix(ROOT / "examples" / "demo.yaml")
    return expand(matrix, suites, lambda spec: revision, device="cpu")


def pinned(cell: Cell, **changes) -> Cell:
    """The cell with library versions pinned, so the key does not follow this machine's installs."""
    data = cell.model_dump()
    data["libraries"] = {"torch": "2.13.0", "transformers": "5.23.0", "lm_eval": "0.4.13"}
    data.update(changes)
    return Cell.model_validate(data)


def test_expand_gives_every_model_variant_pair_in_order():
    cells = demo_cells()
    assert [(c.model.display_name, c.variant) for c in cells] == [
        (m, v) for m in ("SmolLM2-135M-Instruct", "Gemma-3-270M") for v in ("fp16", "int8", "nf4", "gptq-4", "gguf-q8_0", "gguf-q4_k_m")
    ]
    assert all(c.device == "cpu" and c.timeout_s == 3600 for c in cells)


def test_options_carry_backend_defaults():
    cells = {c.variant: c for c in demo_cells()[:4]}
    assert cells["int8"].options["threshold"] == 6.0
    assert cells["nf4"].options == {"double_quant": True, "compute_dtype": "auto", "dtype": "auto"}
    assert cells["gptq-4"].options["group_size"] == 64 and cells["gptq-4"].options["sym"] is True


GOLDEN_MATRIX = """\
name: golden
models:
  - hub: org/model
variants:
  nf4: {}
suites: [s.yaml]
"""


def test_golden_key(write):
    # If this changes, every stored result is re-run: change it only on purpose.
    write("s.yaml", "name: s\nrequires_hub: true\ntasks:\n  - task: arc_easy\n")
    matrix, suites = load_matrix(write("m.yaml", GOLDEN_MATRIX))
    (cell,) = expand(matrix, suites, lambda spec: "0123abcd", device="cpu")
    assert pinned(cell).key == GOLDEN_KEY


def test_suite_description_is_not_in_the_key_but_task_data_is():
    cell = pinned(demo_cells()[0])
    suite = cell.suites[0]
    assert suite.local_data_sha256
    reworded = suite.model_copy(update={"description": "other words"})
    assert pinned(cell, suites=[reworded]).key == cell.key
    edited = suite.model_copy(update={"local_data_sha256": "0" * 64})
    assert pinned(cell, suites=[edited]).key != cell.key


def test_key_ignores_run_settings_but_not_content():
    base = pinned(demo_cells()[0])
    assert pinned(base, timeout_s=5, matrix="other").key == base.key
    assert pinned(base, revision="sha256:def").key != base.key
    assert pinned(base, libraries={"torch": "2.14.0", "transformers": "5.23.0", "lm_eval": "0.4.13"}).key != base.key
    assert pinned(base, options={"dtype": "float32"}).key != base.key
    assert pinned(base, seed=1).key != base.key


GOLDEN_KEY = "9e14bc5fdff3253edbd8e4e4086e0956"


def test_key_roundtrips_through_json():
    cell = demo_cells()[3]
    assert Cell.model_validate_json(cell.model_dump_json()).key == cell.key


