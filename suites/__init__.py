"""Named evaluation suites: lists of lm-eval tasks with few-shot and limit settings.

A suite is a YAML file here (`demo`, `quick`, `open-llm-v1`) or any path to one.
Tasks written by this project live in `tasks/` as lm-eval task YAML + JSONL and
are found by lm-eval through `TASKS_DIR` (TaskManager's include_path).
"""
from __future__ import annotations

import difflib
import hashlib
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SUITES_DIR = Path(__file__).parent
TASKS_DIR = SUITES_DIR / "tasks"


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    task: str
    num_fewshot: int = Field(0, ge=0)
    limit: int | None = Field(None, gt=0)


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str = ""
    requires_hub: bool = Field(False, description="its tasks download data from the hub")
    tasks: list[TaskSpec] = Field(min_length=1)
    tasks_dir: str | None = Field(None, description="folder of the suite's own lm-eval tasks, relative to the suite file")
    # sha256 of the files of the local tasks: edited task data changes cell keys
    local_data_sha256: str | None = None

    def task_dirs(self) -> list[Path]:
        """Where lm-eval looks for this suite's local tasks (TaskManager's include_path)."""
        return [TASKS_DIR] + ([Path(self.tasks_dir)] if self.tasks_dir else [])

    def local_task_folder(self, task: str) -> Path | None:
        return next((d / task for d in self.task_dirs() if (d / task).is_dir()), None)


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
