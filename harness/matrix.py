"""The matrix file: models × variants × suites, validated before anything runs.

Every error names the file, the field path, its line and, for a misspelled
key, the closest valid key.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evalq.backends.base import BackendConfig, backend_names, get_backend
from evalq.kv_cache import unknown_types
from evalq.suites import SHIPPED_PREFIX, Suite, SuiteNotFound, load_suite, shipped_text, shipped_texts
from evalq.yamlpos import PositionedYAMLError, line_for, load_with_lines, read_text


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


VariantOptions = dict[str, dict[str, Any] | None]
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
REVISION = re.compile(r"[A-Za-z0-9][\w.\-/]{0,199}")


class ModelSpec(Strict):
    """One model: exactly one of hub, path, gguf or package."""

    name: str | None = Field(None, description="display name; derived from the source when absent")
    hub: str | None = Field(None, description="hub id, e.g. meta-llama/Llama-2-7b-hf")
    revision: str | None = Field(None, description="hub branch, tag or commit")
    path: str | None = Field(None, description="local folder with config.json and weights")
    gguf: str | None = Field(None, description="local GGUF file, dequantized to a 16-bit baseline")
    package: str | None = Field(None, description="a model shipped in a Python package (see evalq.model_sources)")
    family: str | None = Field(None, description="model family (e.g. llama2): the leaderboard puts a family's sizes side by side")
    params: float | None = Field(None, gt=0, description="parameter count, for display")
    trust_remote_code: bool = Field(False, description="run the model repository's own code (never on unless set)")
    variants: VariantOptions | None = Field(None, description="per-model variant options, merged over the matrix's")

    @model_validator(mode="after")
    def _safe_names(self) -> ModelSpec:
        # A hub id or revision becomes part of a cache path: it must never escape it.
        for key in ("name", "hub", "revision", "path", "gguf", "package", "family"):
            value = getattr(self, key)
            if value is not None and "\0" in value:
                raise ValueError(f"{key} contains a NUL byte")
        if self.hub is not None and (not HUB_ID.fullmatch(self.hub) or ".." in self.hub):
            raise ValueError(f"hub {self.hub!r} is not a hub id of the form org/name")
        if self.revision is not None and (not REVISION.fullmatch(self.revision) or ".." in self.revision):
            raise ValueError(f"revision {self.revision!r} is not a branch, tag or commit")
        return self

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        sources = [k for k in ("hub", "path", "gguf", "package") if getattr(self, k)]
        if len(sources) != 1:
            found = ", ".join(sources) or "none"
            raise ValueError(f"give exactly one of hub, path, gguf, package (found: {found})")
        if self.revision and not self.hub:
            raise ValueError("revision applies only to a hub model")
        return self

    @property
    def source(self) -> str:
        return next(k for k in ("hub", "path", "gguf", "package") if getattr(self, k))

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        value = getattr(self, self.source)
        return Path(value).name if self.source in ("path", "gguf") else value


class PerfSettings(Strict):
    prompt_tokens: int = Field(128, gt=0, description="P: prompt length for time to first token")
    new_tokens: int = Field(32, ge=2, description="tokens generated per timed run (greedy, fixed length)")
    batch_sizes: list[int] = Field(default_factory=lambda: [1], min_length=1, description="batch sizes timed for tokens/s")
    warmup: int = Field(1, ge=0, description="untimed runs before timing")
    repeats: int = Field(3, gt=0, description="timed runs; the median is stored with the spread")
    threads: int | None = Field(1, gt=0, description="CPU threads while timing (recorded); null = all cores")

    @model_validator(mode="after")
    def _positive_batches(self) -> PerfSettings:
        bad = [b for b in self.batch_sizes if b <= 0]
        if bad:
            raise ValueError(f"batch sizes must be positive, got {bad}")
        return self


class EqualCostQuestion(Strict):
    """A pre-registered equal-cost question: each quantized cell of `model` against the fp16 cell of `against`."""

    model: str = Field(description="the model whose quantized cells are compared (its display name in models)")
    against: str = Field(description="the model whose fp16 cell they are compared with (list it before `model`, so its "
                         "fp16 cell is stored first)")
    margin: float = Field(0.02, gt=0, lt=1, description="\"within\": the suite-accuracy difference shown inside ±margin "
                          "(0.02: 2 points)")


class UntilDecided(Strict):
    """Evaluate each quantized cell only until its recovery gates are decided (evalq.sequential)."""

    pool: int | None = Field(None, gt=0, description="documents per task to draw from, in a seeded order (the suite's "
                             "fixed subset, else the whole split); null: all of them")
    step: int = Field(50, gt=0, description="documents per task evaluated between two looks at the verdict")
    max_documents: int = Field(500, gt=0, description="budget: documents per task at most (the fp16 baseline runs all of them)")
    max_seconds: float | None = Field(None, gt=0, description="budget: stop looking for more after this much accuracy time")
    gates: list[float] = Field([0.99], min_length=1, description="the recovery gates that must be decided (pass or fail) to stop")
    alpha: float = Field(0.05, gt=0, lt=1, description="error rate of the confidence sequence, over all looks together")
    compare: list[EqualCostQuestion] | None = Field(None, description="equal-cost questions that must also be decided (better, worse "
                                             "or within the margin) before a quantized cell of `model` stops")

    @model_validator(mode="after")
    def _gates(self) -> UntilDecided:
        bad = [g for g in self.gates if not 0.5 <= g <= 1.5]
        if bad:
            raise ValueError(f"gates are recovery ratios between 0.5 and 1.5, got {bad}")
        return self


class EvalSettings(Strict):
    batch_size: int = Field(8, gt=0, description="lm-eval batch size")
    threads: int | None = Field(None, gt=0, description="CPU threads for accuracy; null = all cores")
    limit: int | None = Field(None, gt=0, description="cap on samples per task, over the suites' own limits")
    scorer: Literal["evalq", "lm-eval"] | None = Field(
        None, description="who answers lm-eval's loglikelihood requests of a transformers model: evalq (null, the default: "
                          "each context once, logits only at the continuations) or lm-eval (its own HFLM, for comparison)")
    until_decided: UntilDecided | None = Field(
        None, description="evaluate in a seeded document order until each quantized cell's recovery gates are decided "
                          "(an anytime-valid confidence sequence) or its budget runs out; null: every document of the suites")

    @model_validator(mode="after")
    def _one_cap(self) -> EvalSettings:
        if self.limit is not None and self.until_decided is not None:
            raise ValueError("give limit or until_decided (its max_documents caps the documents a task), not both")
        return self


class TextSource(Strict):
    """A text: a local file or a hub dataset's column."""

    path: str | None = Field(None, description="a local UTF-8 text file, relative to the matrix file, or a text shipped "
                             "with evalq: evalq:wikitext-2/test.txt (WikiText-2's test split)")
    dataset: str | None = Field(None, description="a hub dataset id, e.g. wikitext (needs the hub or its cache)")
    config: str | None = Field(None, description="the dataset's config, e.g. wikitext-2-raw-v1")
    split: str = Field("test", description="the dataset's split")
    column: str = Field("text", description="the dataset's text column")

    @model_validator(mode="after")
    def _one_source(self) -> TextSource:
        if (self.path is None) == (self.dataset is None):
            raise ValueError("give exactly one of path or dataset")
        if self.path is not None and not Path(self.path).is_file():
            shipped = f" (shipped with evalq: {', '.join(shipped_texts())})" if SHIPPED_PREFIX in self.path else ""
            raise ValueError(f"text {self.path} does not exist{shipped}")
        if self.config is not None and self.dataset is None:
            raise ValueError("config applies only to a dataset")
        return self


class QualitySettings(TextSource):
    """The text slice on which every variant's next-token distributions are
    compared with its model's fp16 baseline (perplexity, KL divergence,
    same-top-1, Δp)."""

    tokens: int = Field(4096, gt=1, description="the slice: this many tokens from the start of the text")
    convention: Literal["llama.cpp", "gptq"] = Field(
        "llama.cpp", description="llama.cpp: windows of 512, second half of each scored; gptq: windows of the model's length, all scored")
    context: int | None = Field(None, gt=1, description="window length; default 512 (llama.cpp) or the model's length (gptq)")
    stride: int | None = Field(None, gt=0, description="distance between window starts; default: the window length")

    @model_validator(mode="after")
    def _stride(self) -> QualitySettings:
        if self.stride is not None and self.context is not None and self.stride > self.context:
            raise ValueError(f"stride {self.stride} is larger than the window ({self.context}): tokens would be skipped")
        return self


class LongContextSettings(TextSource):
    """Quality at long context under each KV-cache type: windows of `context` tokens
    whose last `scored` tokens are fed `chunk` at a time after the rest, so they
    attend to what the cache kept; each compared with the fp16 weights and the
    unquantized cache on the same windows (KLD, same-top-1, PPL), with the cache's
    bytes predicted and measured."""

    context: int = Field(2048, gt=1, description="window length in tokens")
    scored: int = Field(256, gt=0, description="the window's last tokens whose predictions are scored")
    windows: int = Field(1, gt=0, description="windows, one after the other from the text's start")
    chunk: int = Field(64, gt=0, le=512, description="scored tokens fed per forward pass (at most 512: llama.cpp's batch)")
    kv_cache: list[str] = Field(default_factory=lambda: ["f16"], min_length=1,
                                description="cache types, by each runtime's names (evalq.kv_cache): f16 q8_0 q4_0 hqq-4 ...")

    @model_validator(mode="after")
    def _fits(self) -> LongContextSettings:
        if self.scored >= self.context - 1:
            raise ValueError(f"scored ({self.scored}) must leave tokens before it in the window of {self.context}")
        if len(set(self.kv_cache)) != len(self.kv_cache):
            raise ValueError("kv_cache lists a type twice")
        return self


class ServiceLevel(Strict):
    """Latency targets a request must meet to count in goodput (MLPerf's llama2-70b server: 2 s, 200 ms)."""

    ttft_ms: float = Field(2000, gt=0, description="time to first token")
    tpot_ms: float = Field(200, gt=0, description="time per output token after the first")


class ServeSettings(TextSource):
    """Serving under load: the variant behind a real OpenAI-compatible server with
    continuous batching (transformers' own; llama.cpp's llama-server for gguf-*; vLLM
    on request), driven at each request rate in turn with Poisson arrivals of prompts
    cut from the text (seeded: the same prompts for every variant of a model)."""

    rates: list[float | Literal["inf"]] = Field(min_length=1, description="requests per second, in order; inf: all at once")
    duration_s: float = Field(30, gt=0, description="each rate sends rate × duration_s requests (at least 1)")
    max_requests: int = Field(64, gt=0, description="cap on the requests of one rate")
    max_concurrency: int | None = Field(None, gt=0, description="cap on requests in flight (the client's), none: uncapped")
    single_stream: int = Field(8, ge=0, description="requests sent one at a time before the sweep (the server's own batch-1 figures); 0: none")
    slots: int = Field(4, gt=0, description="sequences the server batches at once (llama.cpp --parallel, transformers' paged cache)")
    prompt_tokens: int = Field(128, gt=0, description="prompt length of every request, cut from the text")
    output_tokens: int = Field(32, gt=1, description="every answer is this long (EOS ignored)")
    slo: ServiceLevel = Field(default_factory=ServiceLevel, description="latency targets for goodput and \"best within the SLO\"")
    request_timeout_s: float = Field(120, gt=0, description="a request not answered in full by then counts as failed")
    start_timeout_s: float = Field(600, gt=0, description="the server must answer /health by then (it loads the model)")
    server: Literal["auto", "vllm"] = Field("auto", description="auto: transformers or llama-server by variant; vllm: `vllm serve`")
    variants: list[str] | None = Field(None, description="the variants to serve; none: all")
    models: list[str] | None = Field(None, description="the models (by name) to serve; none: all")

    @model_validator(mode="after")
    def _rates(self) -> ServeSettings:
        finite = [r for r in self.rates if r != "inf"]
        if any(r <= 0 for r in finite):
            raise ValueError("every rate must be above 0 requests per second")
        if len(set(self.rates)) != len(self.rates):
            raise ValueError("rates lists a rate twice")
        return self


class Matrix(Strict):
    name: str = Field(min_length=1, description="the matrix's name: part of every cell key, shown by results and the board")
    description: str | None = Field(None, description="free text shown with the matrix")
    models: list[ModelSpec] = Field(min_length=1, description="the models, each from exactly one source")
    variants: VariantOptions = Field(min_length=1, description="variant name → its options (see the variant keys below)")
    suites: list[str] = Field(min_length=1, description="suite names (demo, core, quick, open-llm-v1…) or paths to suite YAML")
    perf: PerfSettings = Field(default_factory=PerfSettings, description="speed: time to first token, decode, tokens/s")
    eval: EvalSettings = Field(default_factory=EvalSettings, description="accuracy through lm-eval")
    quality: QualitySettings | None = Field(None, description="paired token-level quality against fp16; absent: not measured")
    long_context: LongContextSettings | None = Field(None, description="KV-cache types at long context; absent: not measured")
    serve: ServeSettings | None = Field(None, description="request-rate sweeps through a real server; absent: not measured")
    timeout_s: int | None = Field(None, gt=0, description="wall-clock limit of one cell")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda where a GPU is visible, else cpu")
    seed: int = Field(1234, description="seed of torch, lm-eval's sampling and few-shot draws, and the serving prompts and arrivals (calibration has its own)")

    @model_validator(mode="after")
    def _unique_models(self) -> Matrix:
        seen: set[str] = set()
        for m in self.models:
            if m.display_name in seen:
                raise ValueError(f"model {m.display_name!r} is listed twice")
            seen.add(m.display_name)
        return self

    @model_validator(mode="after")
    def _questions_name_models(self) -> Matrix:
        names = [m.display_name for m in self.models]
        for q in (self.eval.until_decided.compare if self.eval.until_decided else None) or []:
            for name in (q.model, q.against):
                if name not in names:
                    raise ValueError(f"eval.until_decided.compare names {name!r}, which is not a model of this matrix "
                                     f"({', '.join(names)})")
            if q.model == q.against:
                raise ValueError(f"eval.until_decided.compare: {q.model!r} against itself (its fp16 cell is its baseline already)")
            if names.index(q.against) > names.index(q.model):
                raise ValueError(f"eval.until_decided.compare: list {q.against!r} before {q.model!r} in models, so that its "
                                 "fp16 cell is stored before the cells compared with it run")
        return self


class MatrixError(ValueError):
    """A matrix that cannot run, with every problem located."""

    def __init__(self, file: str, problems: list[str]):
        self.file = file
        self.problems = problems
        super().__init__(f"{file}: " + ("\n  ".join(problems) if len(problems) > 1 else problems[0]))


def _model_fields(cls: type[BaseModel], loc: tuple) -> list[str]:
    """Valid keys at `loc` inside `cls`, for 'did you mean'."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        nested = _first_model(ann)
        if nested is None:
            return []
        cls = nested
    return list(cls.model_fields)


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found:
            return found
    return None


def located(loc: tuple, msg: str, lines: dict, valid: list[str] | None = None) -> str:
    path = ".".join(str(p) for p in loc) or "(top level)"
    line = line_for(lines, loc)
    where = f"line {line}: " if line else ""
    hint = ""
    if valid is not None and loc and isinstance(loc[-1], str):
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (valid keys: {', '.join(valid)})"
    return f"{where}{path}: {msg}{hint}"


def _pydantic_problems(exc: ValidationError, root: type[BaseModel], lines: dict, prefix: tuple = ()) -> list[str]:
    out = []
    for err in exc.errors():
        loc = prefix + tuple(p for p in err["loc"] if p not in ("function-after",))
        if err["type"] == "extra_forbidden":
            valid = _model_fields(root, tuple(err["loc"][:-1]))
            out.append(located(loc, "unknown key", lines, valid))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append(located(loc, msg, lines))
    return out


def validate_variants(variants: VariantOptions, lines: dict, prefix: tuple) -> list[str]:
    """Check variant names and their options against each backend's Config."""
    problems = []
    names = backend_names()
    for name, options in variants.items():
        loc = prefix + (name,)
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.4)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(names)})"
            problems.append(located(loc, "unknown variant" + hint, lines))
            continue
        cfg_cls = get_backend(name).Config
        try:
            cfg_cls.model_validate(options or {})
        except ValidationError as exc:
            problems += _pydantic_problems(exc, cfg_cls, lines, loc)
    return problems


def merged_options(matrix: Matrix, model: ModelSpec, variant: str) -> dict[str, Any]:
    base = dict(matrix.variants.get(variant) or {})
    base.update((model.variants or {}).get(variant) or {})
    return base


def variant_options(matrix: Matrix, model: ModelSpec, variant: str) -> BackendConfig:
    """The one place a variant's options are validated: the matrix's, then the
    model's override, through the backend's Config (raises pydantic's ValidationError)."""
    return get_backend(variant).Config.model_validate(merged_options(matrix, model, variant))


def _resolve_paths(data: dict, base: Path) -> None:
    """Make local paths relative to the matrix file absolute, so cells don't depend on cwd."""
    for m in data.get("models") or []:
        if isinstance(m, dict):
            for key in ("path", "gguf"):
                if isinstance(m.get(key), str) and "\0" not in m[key]:  # a NUL is reported by validation
                    m[key] = str((base / m[key]).expanduser().resolve())
    texts = [data.get(section) for section in ("quality", "long_context", "serve")]
    texts += [opts.get("calibration") for opts in _all_variant_options(data) if isinstance(opts, dict)]
    for text in texts:
        if isinstance(text, dict) and isinstance(text.get("path"), str) and "\0" not in text["path"]:
            text["path"] = _text_path(text["path"], base)


def _text_path(value: str, base: Path) -> str:
    """A text's file: shipped with evalq (`evalq:…`), else relative to the matrix file."""
    if value.startswith(SHIPPED_PREFIX):
        try:
            file = shipped_text(value)
        except ValueError:
            file = None
        return str(file) if file and file.is_file() else value  # validation names what the matrix said
    return str((base / value).expanduser().resolve())


def _all_variant_options(data: dict):
    if isinstance(data.get("variants"), dict):
        yield from (v for v in data["variants"].values() if isinstance(v, dict))
    for m in data.get("models") or []:
        if isinstance(m, dict) and isinstance(m.get("variants"), dict):
            yield from (v for v in m["variants"].values() if isinstance(v, dict))


def read_matrix(path: str | Path) -> tuple[Matrix, list[Suite]]:
    """Read, validate and resolve a matrix file. Raises MatrixError."""
    path = Path(path)
    file = str(path)
    try:
        data, lines = load_with_lines(read_text(path))
    except PositionedYAMLError as exc:
        raise MatrixError(file, [str(exc)]) from None
    if not isinstance(data, dict):
        raise MatrixError(file, ["the matrix must be a YAML mapping with name, models, variants and suites"])
    _resolve_paths(data, path.parent)
    try:
        matrix = Matrix.model_validate(data)
    except ValidationError as exc:
        raise MatrixError(file, _pydantic_problems(exc, Matrix, lines)) from None

    problems = validate_variants(matrix.variants, lines, ("variants",))
    for i, model in enumerate(matrix.models):
        if model.variants:
            problems += validate_variants(model.variants, lines, ("models", i, "variants"))
            for name in model.variants:
                if name in backend_names() and name not in matrix.variants:
                    problems.append(located(("models", i, "variants", name), "variant is not in the matrix's variants", lines))
        # merged options must validate too (a per-model override can break a matrix default)
        for name in matrix.variants:
            if name in backend_names():
                try:
                    variant_options(matrix, model, name)
                except ValidationError as exc:
                    problems += _pydantic_problems(exc, get_backend(name).Config, lines, ("models", i, "variants", name))
    if matrix.long_context:
        runtimes = {get_backend(v).kv_runtime for v in matrix.variants if v in backend_names()}
        for i, msg in unknown_types(matrix.long_context.kv_cache, runtimes):
            problems.append(located(("long_context", "kv_cache", i), msg, lines))
    if matrix.serve:
        names = [m.display_name for m in matrix.models]
        for field, listed, known in (("variants", matrix.serve.variants, list(matrix.variants)), ("models", matrix.serve.models, names)):
            for i, name in enumerate(listed or []):
                if name not in known:
                    problems.append(located(("serve", field, i), f"{name!r} is not one of the matrix's {field} ({', '.join(known)})", lines))
    suites: list[Suite] = []
    for i, suite_name in enumerate(matrix.suites):
        try:
            suites.append(load_suite(suite_name, base=path.parent))
        except SuiteNotFound as exc:
            problems.append(located(("suites", i), str(exc), lines))
    if problems:
        raise MatrixError(file, list(dict.fromkeys(problems)))
    return matrix, suites
