"""The floors of DESIGN.md, enforced: an import may only go down.

    kernel (appforge.core)
      -> providers, datasources, prompts      (siblings do not import each other)
      -> apps_yaml
      -> runs                                 (the run service)
      -> evals                                (evaluations: datasets, scorers, their queue)
      -> api
      -> appforge (CLI, client, backups)
      -> builder                              (through appforge.client only)

Every import statement counts, lazy ones inside functions and ``TYPE_CHECKING``
ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOORS: dict[str, int] = {
    "appforge.core": 0,
    "providers": 1,
    "datasources": 1,
    "prompts": 1,
    "apps_yaml": 2,
    "runs": 3,
    "evals": 4,
    "api": 5,
    "appforge": 6,
    "builder": 7,
}
# Some layers may use only part of what is below them.
ONLY: dict[str, tuple[str, ...]] = {"builder": ("builder", "appforge.client")}


def layer(module: str) -> str | None:
    """The layer a dotted module name belongs to (the longest matching prefix)."""
    if module in ("appforge", "appforge.__version__"):
        return "appforge.core"  # the package's __init__ holds only its version
    best = None
    for name in FLOORS:
        if (module == name or module.startswith(name + ".")) and (
            best is None or len(name) > len(best)
        ):
            best = name
    return best


def imports(source: str, module: str) -> list[tuple[int, str]]:
    """(line, imported module) of every import in ``source``, relative ones resolved."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            found.append((node.lineno, base))
            # "from pkg import sub" may import a submodule of another layer.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def violations(module: str, source: str) -> list[str]:
    """Why each import of ``module`` breaks the floors (empty: none does)."""
    home = layer(module)
    assert home is not None, module
    problems = []
    for line, target in imports(source, module):
        there = layer(target)
        if there is None or there == home:
            continue
        allowed = ONLY.get(home)
        if allowed is not None:
            ok = any(target == a or target.startswith(a + ".") for a in allowed)
        else:
            ok = FLOORS[there] < FLOORS[home]
        if not ok:
            problems.append(f"{module}:{line} imports {target} ({home} -> {there})")
    return problems


def _our_modules() -> list[tuple[str, Path]]:
    modules = []
    for top in (
        "appforge",
        "api",
        "apps_yaml",
        "datasources",
        "evals",
        "prompts",
        "providers",
        "runs",
    ):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules.append((".".join(parts), path))
    for path in sorted((ROOT / "builder").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules.append((".".join(parts), path))
    return modules


def test_layers_every_import_goes_down():
    problems = []
    for module, path in _our_modules():
        problems += violations(module, path.read_text())
    assert problems == []


def test_layers_run_service_imports_no_fastapi():
    for module, path in _our_modules():
        if layer(module) in ("evals", "runs", "apps_yaml", "datasources", "prompts", "providers"):
            names = [t for _, t in imports(path.read_text(), module)]
            assert not [n for n in names if n.split(".")[0] in ("fastapi", "starlette")], module


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("datasources.store", "from api.app import create_app\n"),
        ("appforge.core.db", "import runs.tables\n"),
        ("prompts.store", "def f():\n    from datasources import store\n"),
        ("runs.service", "from api import state\n"),
        (
            "apps_yaml.engine",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from runs.service import RunService\n",
        ),
        ("builder.app", "from api.routes import apps\n"),
        ("builder.app", "from appforge.core.settings import Settings\n"),
    ],
)
def test_layers_an_upward_import_is_caught(module: str, source: str):
    assert violations(module, source)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("runs.service", "from apps_yaml.engine import AppRunner\nfrom appforge.core import db\n"),
        ("api.app", "from runs.service import RunService\n"),
        ("appforge.cli.run", "from api.app import create_app\n"),
        ("builder.app", "from appforge.client import Client\n"),
        ("datasources.queue", "from appforge.core.queue import LeaseQueue\n"),
    ],
)
def test_layers_a_downward_import_passes(module: str, source: str):
    assert violations(module, source) == []
