"""The layout promises of DESIGN.md: platform/ is a source root, not a package."""

import ast
import importlib
import platform as stdlib_platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_it_keeps_stdlib_platform_importable():
    assert stdlib_platform.system()  # would be AttributeError if platform/ shadowed it
    assert Path(stdlib_platform.__file__).name == "platform.py"


def test_it_has_no_platform_package_marker():
    assert (ROOT / "platform").is_dir()
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_it_turns_on_ruff_a005():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"A"' in text  # flake8-builtins, which includes A005 (module shadows stdlib)


def _imports(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_it_keeps_attribution_and_ledger_free_of_django():
    for package in ("attribution", "ledger"):
        assert "django" not in _imports(package), f"{package}/ must not import Django"


def test_it_keeps_dependencies_pointing_one_way():
    assert not {"ledger", "federated"} & _imports("attribution")
    assert not {"attribution", "federated"} & _imports("ledger")


def test_it_does_not_reuse_top_level_names_for_django_apps():
    top_level = {p.name for p in ROOT.iterdir() if p.is_dir()}
    apps = {p.name for p in (ROOT / "platform").iterdir() if (p / "apps.py").exists()}
    assert apps and not apps & top_level


def test_it_imports_settings_from_env_only():
    settings = importlib.import_module("config.settings")
    assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
