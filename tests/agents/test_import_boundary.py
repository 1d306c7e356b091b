"""The agents run on hosts without database credentials: nothing under agents/ may import the
control plane (Django, its apps, the cloudmgr project, DRF)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import agents

AGENTS_DIR = Path(agents.__file__).resolve().parent
FORBIDDEN = {"django", "apps", "cloudmgr", "rest_framework"}
# Loaded only when Django is configured or set up.
DJANGO_SETUP_MODULES = ("django.conf", "django.apps", "django.db")
SOURCES = sorted(AGENTS_DIR.rglob("*.py"))


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def test_sources_found():
    assert len(SOURCES) > 10


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(AGENTS_DIR)))
def test_no_control_plane_imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [f"line {line}: {module}" for line, module in _imported_modules(tree) if module.split(".")[0] in FORBIDDEN]
    assert not bad, f"{path} imports the control plane: {bad}"


def test_importing_the_agents_loads_no_control_plane():
    """Even with DJANGO_SETTINGS_MODULE set (Celery's Django fixup), importing the agents loads no
    project module and does not set Django up. (kombu itself imports ``django.utils.functional``
    when Django is installed; that is harmless and out of our hands.)"""
    code = (
        "import sys, agents.worker, agents.tasks, agents.compute.libvirt_driver, agents.compute.fake\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {!r} or m in {!r})\n"
        "assert not bad, bad\n".format(FORBIDDEN - {"django"}, DJANGO_SETUP_MODULES)
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "cloudmgr.settings"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=AGENTS_DIR.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
