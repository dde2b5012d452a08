"""Packages are found, never listed by hand: evalq is the folder harness/, and the
top-level folders leaderboard/ and suites/ are its subpackages evalq.leaderboard and
evalq.suites; every folder under them with an __init__.py is a package
(tests/integration/test_wheel.py builds the wheel and imports every module of it).
Everything else about the package is in pyproject.toml."""
from pathlib import Path

from setuptools import setup

ROOTS = {"evalq": "harness", "evalq.leaderboard": "leaderboard", "evalq.suites": "suites"}


def packages() -> list[str]:
    here = Path(__file__).parent
    found = []
    for name, folder in ROOTS.items():
        for init in sorted((here / folder).rglob("__init__.py")):
            found.append(".".join((name, *init.parent.relative_to(here / folder).parts)))
    return found


setup(packages=packages(), package_dir=ROOTS)
