"""pyproject.toml declares every distribution the overlay imports or leans on, with ranges that
the installed versions fit."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OVERLAY = ROOT / "overlay" / "acr_blob"
# The import name of each runtime distribution, where the two differ.
DISTRIBUTIONS = {"dateutil": "python-dateutil"}
# Not imported by name, but the fast body read goes through their internals (_fast_read.py).
IMPLICIT = {"anyio", "h11"}


def declared() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = {}
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
        requirements[name.lower()] = requirement[len(name) :]
    return requirements


def imported() -> set[str]:
    names = set()
    for source in OVERLAY.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names} - {"acr_blob", "acr_blob_api"}


def release(text: str) -> tuple[int, ...]:
    """``1.0.9`` -> ``(1, 0, 9)``; ``2.9.0.post0`` -> ``(2, 9, 0)``."""
    return tuple(int(part) for part in re.findall(r"^[0-9.]*[0-9]", text)[0].split("."))


def test_every_distribution_the_overlay_uses_is_declared() -> None:
    needed = {DISTRIBUTIONS.get(name, name) for name in imported() | IMPLICIT}
    assert {"httpx", "httpcore", "attrs", "python-dateutil", "anyio", "h11"} <= needed
    assert needed <= set(declared()), f"not in pyproject.toml: {needed - set(declared())}"


def test_internals_are_bounded_and_the_installed_versions_fit() -> None:
    requirements = declared()
    for name in ("httpcore", "anyio", "h11"):
        bounds = dict(re.findall(r"(>=|<)([0-9.]+)", requirements[name]))
        assert set(bounds) == {">=", "<"}, f"{name} needs a lower and an upper bound"
        installed = release(version(name))
        assert release(bounds[">="]) <= installed < release(bounds["<"]), (name, installed)
