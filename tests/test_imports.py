"""Imports sit at the top of modules: one inside a function hides a dependency (or an import cycle).

The package's import contracts (``[tool.importlinter]`` in pyproject.toml) run
with ``lint-imports``; they count imports inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ratelimit_tiers

PACKAGE = Path(ratelimit_tiers.__file__).parent

#: The imports that must stay inside functions, and why.
INSIDE_FUNCTIONS = {
    # AppConfig.ready: models cannot be imported while Django populates the app registry.
    ("apps.py", "ratelimit_tiers.checks"),
    ("apps.py", "ratelimit_tiers.invalidation"),
    # Optional dependencies: drf-spectacular, prometheus_client, redis-py.
    ("apps.py", "ratelimit_tiers.openapi"),
    ("apps.py", "ratelimit_tiers.metrics"),
    ("checks.py", "ratelimit_tiers.storage.eviction"),
}


def imports_inside_functions() -> set[tuple[str, str]]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom):
                    module = inner.module or ""
                    # "from ratelimit_tiers import checks": the module is the name imported.
                    top = module == "ratelimit_tiers"
                    names = [f"{module}.{alias.name}" if top else module for alias in inner.names]
                elif isinstance(inner, ast.Import):
                    names = [alias.name for alias in inner.names]
                else:
                    continue
                found |= {(str(path.relative_to(PACKAGE)), name) for name in names}
    return found


def test_no_imports_inside_functions_but_the_necessary_ones():
    assert imports_inside_functions() == INSIDE_FUNCTIONS
