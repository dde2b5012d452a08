"""Cell keys: stable for the same content, different for anything that changes numbers."""
from __future__ import annotations

from pathlib import Path

from evalq.cell import Cell, expand
from evalq.matrix import read_matrix

ROOT = Path(__file__).resolve().parents[2]


def demo_cells(revision="sha256:abc"):
    matrix, suites = read_matrix(ROOT / "examples" / "showcase.yaml")
    return expand(matrix, suites, lambda spec: revision, device="cpu")


from evalq.env import cpu_class, cpu_model, gpu_class, hardware_class, hardware_of  # noqa: E402


def pinned(cell: Cell, **changes) -> Cell:
    """The cell with library versions and hardware pinned, so the key does not follow this machine."""
    data = cell.model_dump()
    data["libraries"] = {"torch": "2.13.0", "transformers": "5.23.0", "lm_eval": "0.4.13"}
    data["hardware"] = "Test CPU · avx2"
    data.update(changes)
    return Cell.model_validate(data)


def test_expand_gives_every_model_variant_pair_in_order():
    cells = demo_cells()
    assert [(c.model.display_name, c.variant) for c in cells] == [
        (m, v) for m in ("SmolLM2-135M-Instruct", "Gemma-3-270M") for v in ("fp16", "int8", "nf4", "gptq-4", "gguf-q8_0", "gguf-q4_k_m",
                                                                  "torchao-int8wo")
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
    cuda = expand(*read_matrix(ROOT / "examples" / "showcase.yaml"), lambda spec: "sha256:abc", device="cuda")
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
    # (2026-12: a CPU cell's `auto` dtypes are resolved in the key, so there is one per kind of CPU;
    # then the hardware class itself joined the key.)
    write("s.yaml", "name: s\nrequires_hub: true\ntasks:\n  - task: arc_easy\n")
    matrix, suites = read_matrix(write("m.yaml", GOLDEN_MATRIX))
    (cuda,) = expand(matrix, suites, lambda spec: "0123abcd", device="cuda")
    assert pinned(cuda, hardware=gpu_class("NVIDIA H100 80GB HBM3", "9.0")).key == GOLDEN_KEY_CUDA
    for flags, golden in (({"avx2"}, GOLDEN_KEY_CPU_FLOAT32), ({"avx512_bf16"}, GOLDEN_KEY_CPU_BF16)):
        on_cpu(monkeypatch, flags)
        (cell,) = expand(matrix, suites, lambda spec: "0123abcd", device="cpu")
        assert cell.hardware == cpu_class(cpu_model(), flags)
        assert pinned(cell, hardware=cpu_class("Intel Xeon", flags)).key == golden, flags


def test_the_hardware_class_is_in_the_key_and_a_worker_elsewhere_refuses_the_cell(tmp_path, monkeypatch):
    from evalq.run.child import run_cell

    on_cpu(monkeypatch, {"avx2", "fma"})
    (cell,) = [c for c in demo_cells() if c.variant == "fp16"][:1]
    assert cell.hardware == cpu_class(cpu_model(), {"avx2"}) == hardware_class("cpu")
    elsewhere = pinned(cell, hardware=cpu_class("Intel Xeon", {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}))
    assert elsewhere.key != pinned(cell).key and elsewhere.hardware == "Intel Xeon · avx2 avx512f avx512_bf16 amx_bf16"
    outcome = run_cell(elsewhere.model_dump_json(), tmp_path)
    assert outcome.status == "unsupported" and "keyed for Intel Xeon" in outcome.error, outcome.error


def test_the_hardware_class_is_read_back_from_a_stored_env():
    assert hardware_of({"cpu": "AMD EPYC", "cpu_features": {"flags": ["avx", "avx2", "fma", "f16c"]}}) == "AMD EPYC · avx2"
    assert hardware_of({"cpu": "x", "gpu": "NVIDIA H200", "compute_capability": "9.0"}) == "NVIDIA H200 · sm 9.0"
    assert hardware_of({}) is None


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


def test_a_budget_is_another_cell_but_continues_the_same_rounds():
    from evalq.matrix import UntilDecided

    base = pinned(demo_cells()[0])
    small = pinned(base, eval=base.eval.model_copy(update={"until_decided": UntilDecided(max_documents=100)}))
    large = pinned(base, eval=base.eval.model_copy(update={"until_decided": UntilDecided(max_documents=300, step=20)}))
    assert small.key != large.key and small.rounds_key == large.rounds_key == base.rounds_key
    assert pinned(small, seed=1).rounds_key != small.rounds_key  # another draw order
    assert pinned(small, eval=small.eval.model_copy(update={"batch_size": 4})).rounds_key != small.rounds_key


GOLDEN_KEY_CUDA = "015367ae487bd5d6baafea44c7b68877"
GOLDEN_KEY_CPU_FLOAT32 = "8d7d1320222ead81ab74f4b1591f97b0"
GOLDEN_KEY_CPU_BF16 = "8ffa1da63f29d0bd6d64e19df460d27f"


def test_key_roundtrips_through_json():
    cell = demo_cells()[3]
    assert Cell.model_validate_json(cell.model_dump_json()).key == cell.key




def test_each_variant_gets_the_kv_cache_types_of_its_runtime(write):
    """The cross of variants and cache types is of what each runtime has: llama.cpp's for gguf-*,
    transformers' for the rest; a variant whose runtime has none of them measures no long context."""
    text = write("t.txt", "text " * 10)
    path = write("m.yaml", f"name: kv\nmodels:\n  - hub: org/m\nvariants:\n  fp16: {{}}\n  gguf-q8_0: {{}}\n"
                           f"suites: [demo]\nlong_context: {{path: {text}, kv_cache: [f16, q8_0, hqq-4]}}\n")
    matrix, suites = read_matrix(path)
    fp16, gguf = expand(matrix, suites, lambda spec: "0" * 40, device="cpu")
    assert fp16.long_context.kv_cache == ["f16", "hqq-4"] and gguf.long_context.kv_cache == ["f16", "q8_0"]
    assert fp16.long_context.context == gguf.long_context.context == 2048 and fp16.long_context_text_sha256
    path.write_text(path.read_text().replace("[f16, q8_0, hqq-4]", "[q8_0]"))
    fp16, gguf = expand(*read_matrix(path), lambda spec: "0" * 40, device="cpu")
    assert fp16.long_context is None and fp16.long_context_text_sha256 is None and gguf.long_context.kv_cache == ["q8_0"]
