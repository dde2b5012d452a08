"""Test-wide environment: offline, and every cache in a project-local folder
(never the user's home: gptqmodel builds its C++ extension under ~/.cache)."""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import pytest

from postgres_server import PostgresServer

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("EVALQ_TEST_CACHE", ROOT / ".evalq-cache"))

_ENV = {
    "EVALQ_CACHE": str(CACHE / "evalq"),
    "HF_HOME": str(CACHE / "hf"),
    "XDG_CACHE_HOME": str(CACHE / "xdg"),
    "HOME": str(CACHE / "home"),
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
for _k, _v in _ENV.items():
    os.environ[_k] = _v
for _k in ("EVALQ_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HOME"):
    Path(os.environ[_k]).mkdir(parents=True, exist_ok=True)


def _pin_xdist_worker() -> None:
    """Under pytest-xdist, each worker (and every process it starts) gets its own share of the
    cores: "every core" (threads.available) then means that share, and two workers never run
    four busy OpenMP threads on two cores, which slowed a cell tenfold here."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if not worker or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    share = cpus[int(worker.removeprefix("gw")) % count :: count]
    if share and len(cpus) >= count:
        os.sched_setaffinity(0, share)


_pin_xdist_worker()


SHARED_RUN = ("smollm2_run", "smollm2_rows")  # the one SmolLM2 matrix run (integration/conftest.py)
ROOT_DIR = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def reads_shared_run(test_file: str) -> bool:
    path = ROOT_DIR / test_file
    return path.suffix == ".py" and any(name in path.read_text() for name in SHARED_RUN)


def scope_of(nodeid: str) -> str:
    """A test's unit of work for pytest-xdist: its file, and one unit for every file reading the shared run."""
    test_file = nodeid.split("::")[0]
    return "smollm2" if reads_shared_run(test_file) else test_file


if importlib.util.find_spec("xdist"):
    def pytest_xdist_make_scheduler(config, log):
        """`make test` runs two pytest-xdist workers: a file's tests stay on one worker (its module
        fixtures are built once), and the files reading the shared SmolLM2 run share one, started
        first (the longest unit: the other worker takes the rest meanwhile)."""
        from xdist.scheduler import LoadScopeScheduling

        class SharedRunTogether(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return scope_of(nodeid)

        return SharedRunTogether(config, log)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: scope_of(item.nodeid) != "smollm2")  # the shared run first
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def wikitext() -> Path:
    """WikiText-2's test split as shipped with evalq (evalq:wikitext-2/test.txt, CC BY-SA 3.0):
    the one way tests find it. Missing data fails the test that needs it, never skips it."""
    from evalq.suites import shipped_text

    path = shipped_text("evalq:wikitext-2/test.txt")
    if not path.exists():
        pytest.fail(f"{path} is missing: tests calibrate GPTQ and measure quality on it (suites/data/wikitext-2)")
    return path


@pytest.fixture
def write(tmp_path):
    """Write a text file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return _write


def word_tokenizer(vocab_size: int):
    """A word-level tokenizer built in memory: no hub, no files."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from evalq.measure.speed import PROMPT_TEXT

    words = ["<unk>", "<s>", "</s>"] + sorted({w for w in PROMPT_TEXT.replace(".", " .").replace(",", " ,").split()})
    words += [f"w{i}" for i in range(vocab_size - len(words))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>")


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory):
    """make(**config) -> folder of a randomly initialised Llama saved as plain HF
    weights: for tests of paths that do not depend on pretrained weights."""

    def make(**overrides) -> Path:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        settings = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                        tie_word_embeddings=False)
        settings.update(overrides)
        torch.manual_seed(0)
        folder = tmp_path_factory.mktemp("tiny-llama")
        LlamaForCausalLM(LlamaConfig(**settings)).to(torch.bfloat16).save_pretrained(folder)
        word_tokenizer(settings["vocab_size"]).save_pretrained(folder)
        return folder

    return make


# --- a real PostgreSQL, started by the tests in a temporary folder (postgres_server.py) ---


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres) -> str:
    return postgres.new_database()
