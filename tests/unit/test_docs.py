"""The docs stay honest: every command of the CLI is shown in the README or docs/, every
fenced `evalq …` line there names a real command with options it has, every example
matrix validates, every matrix key is in the generated reference (and that reference is
what the schema says now), and the README stays a page a user reads in five minutes."""
from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from evalq.cli import app

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = typer.main.get_command(app)


def is_group(cmd) -> bool:
    return hasattr(cmd, "commands")  # typer's commands are click's or its vendored copy's


def commands(group=COMMAND, prefix: tuple[str, ...] = ()) -> dict:
    out = {}
    for name, cmd in group.commands.items():
        if is_group(cmd):
            out.update(commands(cmd, prefix + (name,)))
        else:
            out[prefix + (name,)] = cmd
    return out


def fenced_evalq_lines() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        fence, lines = False, page.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            if line.startswith("```"):
                fence = not fence
            elif fence and re.match(r"\s*evalq\s", line):
                following = number
                while line.rstrip().endswith("\\"):  # a command continued on the next line
                    line, following = line.rstrip()[:-1] + " " + lines[following], following + 1
                found.append((page.name, number, line.split("  #")[0].split(" # ")[0].strip()))
    return found


def test_every_command_is_documented():
    text = "\n".join(p.read_text() for p in PAGES)
    missing = [" ".join(path) for path in commands() if f"evalq {' '.join(path)}" not in text]
    assert missing == []


LINES = fenced_evalq_lines()


@pytest.mark.parametrize("page,number,line", LINES, ids=[f"{p}:{n}" for p, n, _ in LINES])
def test_every_documented_command_line_names_a_real_command_and_its_options(page, number, line):
    words = shlex.split(line.replace("|", " ").replace("[", " ").replace("]", " "))[1:]
    group = COMMAND
    path = []
    while is_group(group) and words and words[0] in group.commands:
        path.append(words.pop(0))
        group = group.commands[path[-1]]
    assert not is_group(group), f"{page}:{number}: {line!r} names no command"
    options = {o for p in group.params for o in (*p.opts, *p.secondary_opts)}
    used = [w.split("=")[0] for w in words if w.startswith("-") and w not in ("-", "--")]
    assert [o for o in used if o not in options] == [], f"{page}:{number}: {line!r}"
    res = CliRunner().invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("matrix", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_matrix_validates(matrix):
    """Offline, a matrix of hub suites (llama2.yaml: open-llm-v1) can only be refused for that."""
    res = CliRunner().invoke(app, ["validate", str(matrix)])
    if "suites: [open-llm-v1]" in matrix.read_text():
        assert res.exit_code == 2 and "'open-llm-v1' needs hub access" in res.output, res.output
        from evalq.matrix import read_matrix

        assert read_matrix(matrix)[0].models  # the schema itself is valid
    else:
        assert res.exit_code == 0, res.output


def reference_module():
    spec = importlib.util.spec_from_file_location("matrix_reference", ROOT / "scripts" / "matrix_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_matrix_reference_is_what_the_schema_says():
    ref = reference_module()
    assert ref.OUT.read_text() == ref.render(), "run: python scripts/matrix_reference.py"


def test_every_matrix_key_has_a_description_in_the_reference():
    from evalq.matrix import Matrix

    text = reference_module().render()
    def walk(model, prefix=""):
        for name, field in model.model_fields.items():
            yield prefix + name, field
    for key, field in walk(Matrix):
        assert f"`{key}`" in text, key
    undescribed = [line for line in text.splitlines() if line.startswith("| `") and line.rstrip().endswith("|  |")]
    assert undescribed == []


def test_the_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300
    block = lines[lines.index("```bash") + 1: lines.index("```", lines.index("```bash"))]
    assert [line.split()[:2] for line in block] == [["make", "demo"], ["make", "test"]]
    assert not re.search(r"\b[0-9a-f]{7,40}\b", "\n".join(lines)), "no commit hashes in the README"
