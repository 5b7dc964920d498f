"""Layering: the evaluation never imports the toy package, and the runtime never imports the toy's training code.

Checked twice: statically (every ``import`` statement of the source tree) and at run time (``sys.modules`` of a
fresh interpreter after loading the toy model, importing every ``mmaccel.eval`` module, or listing the suites).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import mmaccel

SOURCE = Path(mmaccel.__file__).parent
TRAINING = "mmaccel.toy.training"


def _imports(path: Path) -> set[str]:
    """Every module an ``import`` statement of ``path`` names (absolute; relative imports resolved)."""
    package = ".".join(path.relative_to(SOURCE.parent).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _modules_after(code: str) -> list[str]:
    """``mmaccel`` modules loaded by a fresh interpreter after running ``code``."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith('mmaccel'))))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_eval_sources_never_import_toy():
    offenders = {
        str(path.relative_to(SOURCE)): sorted(name for name in _imports(path) if name.startswith("mmaccel.toy"))
        for path in (SOURCE / "eval").rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_runtime_sources_never_import_training():
    runtime = [path for path in SOURCE.rglob("*.py") if TRAINING.replace(".", "/") not in path.as_posix()]
    runtime = [path for path in runtime if path.relative_to(SOURCE).parts[0] != "cli"]  # the CLI imports it lazily
    offenders = {
        str(path.relative_to(SOURCE)): sorted(n for n in _imports(path) if n.startswith(TRAINING)) for path in runtime
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_loading_the_toy_model_imports_no_training_code():
    modules = _modules_after('import mmaccel\nmmaccel.load("toy")')
    assert "mmaccel.loading" in modules
    assert [name for name in modules if name.startswith(TRAINING)] == []


def test_importing_every_eval_module_imports_no_toy_module():
    code = (
        "import importlib, pkgutil, mmaccel.eval\n"
        "for info in pkgutil.walk_packages(mmaccel.eval.__path__, 'mmaccel.eval.'):\n"
        "    importlib.import_module(info.name)"
    )
    modules = _modules_after(code)
    assert "mmaccel.eval.runner" in modules and "mmaccel.eval.suites" in modules
    assert [name for name in modules if name.startswith("mmaccel.toy")] == []


def test_eval_finds_the_synthetic_suites_through_the_registry_only():
    modules = _modules_after(
        "from mmaccel.eval.suites import list_suites\nassert 'shapes-pope' in list_suites(), list_suites()"
    )
    assert "mmaccel.toy.suites" in modules  # the provider registered them when first asked
    assert [name for name in modules if name.startswith(TRAINING)] == []
