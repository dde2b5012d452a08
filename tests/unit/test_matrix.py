"""Matrix validation: every mistake is an error that names the file, field and line."""
from __future__ import annotations

from pathlib import Path

import pytest

from evalq.matrix import MatrixError, read_matrix

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
name: t
models:
  - name: small
    package: smollm2-135m-instruct
variants:
  fp16: {}
  gptq-4:
    group_size: 64
    calibration:
      path: cal.txt
suites: [demo]
"""


def problems(write, text: str) -> str:
    write("cal.txt", "calibration text")
    path = write("m.yaml", text)
    with pytest.raises(MatrixError) as info:
        read_matrix(path)
    message = str(info.value)
    assert message.startswith(str(path)), message  # the file is named
    return message


@pytest.mark.parametrize("example", ["showcase.yaml", "llama2.yaml"])
def test_shipped_examples_validate(example):
    matrix, suites = read_matrix(ROOT / "examples" / example)
    assert len(matrix.models) == 2
    assert list(matrix.variants)[:6] == ["fp16", "int8", "nf4", "gptq-4", "gguf-q8_0", "gguf-q4_k_m"]
    assert list(matrix.variants)[6:] == (["torchao-int8wo"] if example == "showcase.yaml" else [])
    assert suites


def test_the_demo_runs_until_decided_on_real_documents():
    matrix, suites = read_matrix(ROOT / "examples" / "demo.yaml")
    assert [m.name for m in matrix.models] == ["SmolLM2-135M-Instruct", "Gemma-3-270M"]
    assert list(matrix.variants) == ["fp16", "gguf-q4_k_m", "hqq-2"]
    budget = matrix.eval.until_decided
    assert budget is not None and budget.max_documents * len(suites[0].tasks) >= 3 * 200  # 3× the showcase's documents
    assert budget.pool >= 500 and [s.name for s in suites] == ["demo-pool"]


def test_methods_example_runs_every_method_for_smollm2():
    from evalq.backends.base import REGISTRY
    from evalq.backends.torchao import variant_names as torchao_names

    matrix, _ = read_matrix(ROOT / "examples" / "methods.yaml")
    assert [m.package for m in matrix.models] == ["smollm2-135m-instruct"]
    assert set(REGISTRY) | set(torchao_names()) <= set(matrix.variants)  # every backend and every torchao scheme
    assert len([v for v in matrix.variants if v.startswith("gguf-")]) >= 8
    # one calibration for GPTQ and AWQ (a YAML anchor), resolved relative to the file
    assert matrix.variants["awq-4"]["calibration"] == matrix.variants["gptq-4"]["calibration"]
    assert Path(matrix.variants["awq-4"]["calibration"]["path"]).is_file()
    # both runtimes' KV-cache types at long context, on the text resolved relative to the file
    assert {"q8_0", "q4_0", "hqq-4", "f16"} <= set(matrix.long_context.kv_cache)
    assert Path(matrix.long_context.path).is_file() and matrix.long_context.context == 2048


def test_llama2_names_the_open_llm_v1_tasks():
    _, suites = read_matrix(ROOT / "examples" / "llama2.yaml")
    tasks = {t.task: t.num_fewshot for t in suites[0].tasks}
    assert tasks == {"arc_challenge": 25, "hellaswag": 10, "mmlu": 5, "truthfulqa_mc2": 0, "winogrande": 5, "gsm8k": 5}


def test_good_matrix_resolves_paths_relative_to_the_file(write):
    write("sub/cal.txt", "calibration text")
    path = write("sub/m.yaml", GOOD)
    matrix, _ = read_matrix(path)
    assert matrix.variants["gptq-4"]["calibration"]["path"] == str(path.parent / "cal.txt")


def test_top_level_typo_names_key_line_and_suggestion(write):
    msg = problems(write, GOOD.replace("suites:", "suits:"))
    assert "line 11" in msg and "suits" in msg and "did you mean 'suites'" in msg


def test_nested_typo_in_model(write):
    msg = problems(write, GOOD.replace("    package:", "    pakage:"))
    assert "line 4" in msg and "models.0.pakage" in msg and "did you mean 'package'" in msg


def test_typo_in_variant_option_is_an_error_not_ignored(write):
    msg = problems(write, GOOD.replace("group_size", "group_sise"))
    assert "line 8" in msg and "variants.gptq-4.group_sise" in msg and "group_size" in msg


def test_typo_in_nested_variant_option(write):
    msg = problems(write, GOOD.replace("      path: cal.txt", "      pth: cal.txt"))
    assert "variants.gptq-4.calibration.pth" in msg and "line 10" in msg


def test_unknown_variant_suggests(write):
    msg = problems(write, GOOD.replace("  fp16: {}", "  fp61: {}"))
    assert "unknown variant" in msg and "fp16" in msg and "line 6" in msg


def test_invalid_group_size(write):
    msg = problems(write, GOOD.replace("group_size: 64", "group_size: 100"))
    assert "group_size" in msg and "100" in msg


def test_gptq_needs_calibration_or_checkpoint(write):
    text = GOOD.replace("    group_size: 64\n    calibration:\n      path: cal.txt\n", "    group_size: 64\n")
    assert "calibration" in problems(write, text)


def test_wrong_type(write):
    msg = problems(write, GOOD + "perf:\n  batch_sizes: four\n")
    assert "perf.batch_sizes" in msg and "line 13" in msg


@pytest.mark.parametrize("field,value", [("prompt_tokens", 0), ("repeats", -1), ("new_tokens", 1)])
def test_non_positive_perf_settings(write, field, value):
    assert f"perf.{field}" in problems(write, GOOD + f"perf:\n  {field}: {value}\n")


def test_zero_batch_size(write):
    assert "batch sizes must be positive" in problems(write, GOOD + "perf:\n  batch_sizes: [1, 0]\n")


def test_zero_timeout(write):
    assert "timeout_s" in problems(write, GOOD + "timeout_s: 0\n")


def test_empty_model_list(write):
    text = GOOD.replace("  - name: small\n    package: smollm2-135m-instruct\n", "").replace("models:\n", "models: []\n")
    assert "models" in problems(write, text)


def test_duplicate_models(write):
    text = GOOD.replace("variants:", "  - name: small\n    package: gemma3-270m\nvariants:", 1)
    assert "listed twice" in problems(write, text)


def test_model_needs_exactly_one_source(write):
    msg = problems(write, GOOD.replace("    package: smollm2-135m-instruct", "    package: x\n    hub: a/b"))
    assert "exactly one of hub, path, gguf, package" in msg


def test_unknown_suite_suggests(write):
    msg = problems(write, GOOD.replace("[demo]", "[dmeo]"))
    assert "unknown suite 'dmeo'" in msg and "did you mean 'demo'" in msg and "line 11" in msg


def test_malformed_yaml_has_a_line(write):
    msg = problems(write, GOOD.replace("  fp16: {}", "  fp16: {"))
    assert "malformed YAML" in msg and "line" in msg


def test_not_a_mapping(write):
    assert "YAML mapping" in problems(write, "- just\n- a list\n")


def test_missing_file(tmp_path):
    with pytest.raises(MatrixError, match="file not found"):
        read_matrix(tmp_path / "nope.yaml")


def test_per_model_override_is_validated(write):
    text = GOOD.replace("    package: smollm2-135m-instruct\n",
                        "    package: smollm2-135m-instruct\n    variants:\n      gptq-4:\n        desc_ac: true\n")
    msg = problems(write, text)
    assert "models.0.variants.gptq-4.desc_ac" in msg and "desc_act" in msg


def test_override_of_a_variant_not_in_the_matrix(write):
    text = GOOD.replace("    package: smollm2-135m-instruct\n",
                        "    package: smollm2-135m-instruct\n    variants:\n      nf4: {}\n")
    assert "not in the matrix's variants" in problems(write, text)
