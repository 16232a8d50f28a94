"""The layering rules of the README's map of the code, checked on the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "backend" / "recommender"
CORE = ("classes", "formats", "images", "vectors", "index", "detection", "explain", "evaluation")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# Longer on purpose, with the reason.
LONG_FUNCTIONS = {
    "recommender.index.kernels.scan_blocks": "the compiled scan loop: its state (heap, candidates, boundary rows) "
    "lives in registers across one pass; the parts that stand alone are inlined helpers",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "migrations" in parts:
            continue  # Alembic's scripts, run by Alembic
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports (absolute names), including imports inside functions."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return names


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _violations(layers: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    problems = []
    for module, path in MODULES.items():
        if _layer(module) not in layers:
            continue
        for name in _imports(module, path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                problems.append(f"{module} imports {name}")
    return problems


def test_the_rule_finds_what_it_looks_for() -> None:
    # The checker itself must see relative, absolute and in-function imports.
    imports = _imports("recommender.web.api", MODULES["recommender.web.api"])
    assert "recommender.service" in imports and "recommender.shapes" in imports and "flask" in imports
    assert "recommender.storage" in _imports("recommender.service.ingest", MODULES["recommender.service.ingest"])


def test_web_cli_and_tasks_never_touch_storage_or_the_database_driver() -> None:
    assert _violations(("web", "cli", "tasks"), ("recommender.storage", "sqlalchemy", "psycopg")) == []


def test_only_the_queue_imports_celery() -> None:
    # Without BROKER_URL nothing loads Celery: the CLI imports recommender.tasks inside the
    # commands that need it, and nothing else imports it at all.
    layers = tuple({_layer(m) for m in MODULES} - {"tasks", "cli"})
    assert _violations(layers, ("celery", "kombu", "redis", "recommender.tasks")) == []


def test_the_core_imports_neither_the_web_nor_the_database_nor_the_service() -> None:
    forbidden = ("flask", "werkzeug", "sqlalchemy", "recommender.storage", "recommender.service", "recommender.web",
                 "recommender.cli", "recommender.bootstrap", "recommender.config")
    assert _violations(CORE, forbidden) == []


def test_storage_and_service_know_nothing_of_their_callers() -> None:
    callers = ("flask", "recommender.web", "recommender.cli", "recommender.tasks", "recommender.bootstrap", "recommender.shapes")
    assert _violations(("storage", "service"), callers) == []
    assert _violations(("storage",), ("recommender.service",)) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small(module: str) -> None:
    source = MODULES[module].read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{module} has more than {MAX_MODULE_LINES} lines"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if f"{module}.{node.name}" not in LONG_FUNCTIONS:
                assert length <= MAX_FUNCTION_LINES, f"{module}.{node.name} has {length} lines"


@pytest.mark.parametrize("asset", sorted(p.name for p in (PACKAGE / "web" / "page").iterdir() if p.is_file()))
def test_the_page_files_stay_small(asset: str) -> None:
    # The page has no build step, so its scripts are split into ES modules by hand; this keeps them split.
    lines = len((PACKAGE / "web" / "page" / asset).read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"web/page/{asset} has {lines} lines, more than {MAX_MODULE_LINES}"
