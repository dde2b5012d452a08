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


def on_cpu(monkeypatch, flags: set[str]) -> None:
    """Which CPU expands the matrix: its flags decide what dtype `auto` means."""
    import evalq.cpu

    monkeypatch.setattr(evalq.cpu, "cpu_flags", lambda: frozenset(flags))


def test_options_carry_backend_defaults(monkeypatch):
    on_cpu(monkeypatch, {"avx2", "fma"})
    cells = {c.variant: c for c in demo_cells()[:4]}
    assert cells["int8"].options["threshold"] == 6.0
    # auto resolved where the matrix is expanded: float32 on a CPU without native bf16
    assert cells["nf4"].options == {"double_quant": True, "compute_dtype": "float32", "dtype": "float32"}
    assert cells["fp16"].options["dtype"] == cells["int8"].options["dtype"] == cells["gptq-4"].options["dtype"] == "float32"
    assert cells["fp16"].baseline_options == {"dtype": "float32"}
    assert cells["gptq-4"].options["group_size"] == 64 and cells["gptq-4"].options["sym"] is True


def test_auto_dtype_follows_the_cpu_and_the_key_says_which(monkeypatch):
    on_cpu(monkeypatch, {"avx2", "fma"})
    avx2 = demo_cells()
    on_cpu(monkeypatch, {"avx2", "avx512f", "avx512_bf16"})
    bf16 = demo_cells()
    assert bf16[2].options["compute_dtype"] == "bfloat16" and bf16[0].options["dtype"] == "bfloat16"
    assert all(a.key != b.key for a, b in zip(avx2, bf16) if not a.variant.startswith("gguf-"))
    cuda = expand(*load_matrix(ROOT / "examples" / "demo.yaml"), lambda spec: "sha256:abc", device="cuda")
    assert cuda[0].options["dtype"] == "auto"  # float16 on CUDA, resolved by the backend as before


GOLDEN_MATRIX = """\
name: golden
models:
  - hub: org/model
variants:
  nf4: {}
suites: [s.yaml]
"""


def test_golden_key(write, monkeypatch):
    # If this changes, every stored result is re-run: change it only on purpose.
    # (2026-12: a CPU cell's `auto` dtypes are resolved in the key, so there is one per kind of CPU.)
    write("s.yaml", "name: s\nrequires_hub: true\ntasks:\n  - task: arc_easy\n")
    matrix, suites = load_matrix(write("m.yaml", GOLDEN_MATRIX))
    (cuda,) = expand(matrix, suites, lambda spec: "0123abcd", device="cuda")
    assert pinned(cuda).key == GOLDEN_KEY_CUDA
    for flags, golden in (({"avx2"}, GOLDEN_KEY_CPU_FLOAT32), ({"avx512_bf16"}, GOLDEN_KEY_CPU_BF16)):
        on_cpu(monkeypatch, flags)
        (cell,) = expand(matrix, suites, lambda spec: "0123abcd", device="cpu")
        assert pinned(cell).key == golden, flags


def test_suite_description_is_not_in_the_key_but_task_data_is():
    cell = pinned(demo_cells()[0])
    suite = cell.suites[0]
    assert suite.data == "shipped" and suite.data_version  # the installed benchmark data's version
    reworded = suite.model_copy(update={"description": "other words"})
    assert pinned(cell, suites=[reworded]).key == cell.key
    for change in ({"local_data_sha256": "0" * 64}, {"data_version": "0.0.1"}):
        assert pinned(cell, suites=[suite.model_copy(update=change)]).key != cell.key


def test_key_ignores_run_settings_but_not_content():
    base = pinned(demo_cells()[0])
    assert pinned(base, timeout_s=5, matrix="other").key == base.key
    assert pinned(base, revision="sha256:def").key != base.key
    assert pinned(base, libraries={"torch": "2.14.0", "transformers": "5.23.0", "lm_eval": "0.4.13"}).key != base.key
    assert pinned(base, options={"dtype": "float16"}).key != base.key
    assert pinned(base, seed=1).key != base.key


GOLDEN_KEY_CUDA = "119af5f859dff7a56690a744f6ac7f10"
GOLDEN_KEY_CPU_FLOAT32 = "fa327d26be6e4877fe0bb42b1c51aea1"
GOLDEN_KEY_CPU_BF16 = "403574a92605e193d1b2b34975750e90"


def test_key_roundtrips_through_json():
    cell = demo_cells()[3]
    assert Cell.model_validate_json(cell.model_dump_json()).key == cell.key


