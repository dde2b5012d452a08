"""Write docs/matrix-reference.md: every key of a matrix file, with its type, default and
description, read from the schema itself (evalq.matrix and each backend's Config), so
the reference cannot fall behind the code (tests/unit/test_docs.py compares them).

    python scripts/matrix_reference.py [--check]
"""
from __future__ import annotations

import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from evalq.backends.base import backend_names, get_backend
from evalq.matrix import Matrix

OUT = Path(__file__).resolve().parents[1] / "docs" / "matrix-reference.md"
SKIP = {"variants"}  # variant options are listed per backend below

HEAD = """# Matrix reference

Every key of a matrix file, generated from the schema (`python scripts/matrix_reference.py`;
a test fails when this page and the code disagree). A typo anywhere is an error naming the
file, the key, its line and the closest valid key. Relative paths are relative to the matrix
file; `evalq:wikitext-2/test.txt` names the WikiText-2 test split shipped with evalq. How the
sections fit together, with an example: [matrix.md](matrix.md).
"""


def models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in models_in(arg)]


def type_name(annotation) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "")
    return text.replace(" | ", " or ").replace("NoneType", "null").replace("None", "null")


def default_of(field) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        return "…" if isinstance(value, BaseModel) else repr(value)
    return "null" if field.default in (None, PydanticUndefined) else repr(field.default)


def rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        if prefix == "" and name in SKIP or (prefix == "models[]." and name in SKIP):
            continue
        key = f"{prefix}{name}"
        nested = models_in(field.annotation)
        is_list = typing.get_origin(field.annotation) is list or any(
            typing.get_origin(a) is list for a in typing.get_args(field.annotation))
        desc = (field.description or "").replace("|", "\\|")
        if nested:
            out.append(f"| `{key}` | section | {default_of(field)} | {desc} |")
            out += rows(nested[0], f"{key}[]." if is_list else f"{key}.")
        else:
            out.append(f"| `{key}` | {type_name(field.annotation)} | {default_of(field)} | {desc} |")
    return out


def render() -> str:
    parts = [HEAD, "## Top level and sections\n", "| key | type | default | description |", "| --- | --- | --- | --- |"]
    parts += rows(Matrix)
    parts += ["| `variants` | section | required | variant name → its options, below; also `models[].variants`, merged over these |",
              "", "## Variant options\n",
              "Under `variants.<name>` (and `models[].variants.<name>`). Each variant accepts only its own keys.\n"]
    by_config: dict[type, list[str]] = {}
    for name in backend_names():  # variants of one backend with the same options share a table
        by_config.setdefault(get_backend(name).Config, []).append(name)
    for config, names in by_config.items():
        backend = get_backend(names[0])
        parts.append("### " + ", ".join(f"`{n}`" for n in names) + "\n")
        if len(names) == 1 and getattr(backend, "description", ""):
            parts.append(backend.description.strip() + "\n")
        fields = rows(config)
        if fields:
            parts += ["| key | type | default | description |", "| --- | --- | --- | --- |", *fields, ""]
        else:
            parts.append("No options.\n")
    return "\n".join(p for p in parts if p is not None).rstrip() + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python scripts/matrix_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
