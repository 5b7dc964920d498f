"""The registry of synthetic suites: generated data sets in a real benchmark's format, scored by its scorer.

A package that generates suites registers each with :func:`register_suite` when it is imported; the evaluation
never imports such a package itself. :data:`SUITE_PROVIDERS` names the modules that register suites (the shapes
world of ``mmaccel.toy`` by default); they are imported, by name, only when a suite is looked up. Add a module
with :func:`add_provider` to make its suites available to ``mmaccel eval``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

from mmaccel.errors import ConfigError

__all__ = [
    "SUITE_PROVIDERS",
    "SyntheticSuite",
    "add_provider",
    "find_suite",
    "get_suite",
    "list_suites",
    "prepare_suite",
    "register_suite",
]


class SyntheticSuite(Protocol):
    """What the evaluation needs of a suite: its ``name``, the registered ``benchmark`` that loads and scores it,
    and ``prepare(root, size)``, which leaves the suite at ``size`` (``None``: full size) in folder ``root``
    (reusing an earlier copy of the same size) and returns ``root``."""

    name: str
    benchmark: str

    def prepare(self, root: Path, size: int | None = None) -> Path: ...


SUITE_PROVIDERS: list[str] = ["mmaccel.toy.suites"]  # modules that register suites when imported
_SUITES: dict[str, SyntheticSuite] = {}
_loaded: set[str] = set()


def register_suite(suite: SyntheticSuite) -> None:
    """Make ``suite`` available under ``suite.name`` (a second registration of the same name replaces it)."""
    _SUITES[suite.name] = suite


def add_provider(module: str) -> None:
    """Import ``module`` (which registers suites) the next time suites are looked up."""
    if module not in SUITE_PROVIDERS:
        SUITE_PROVIDERS.append(module)


def _load_providers() -> None:
    for module in SUITE_PROVIDERS:
        if module not in _loaded:
            importlib.import_module(module)
            _loaded.add(module)


def list_suites() -> list[str]:
    """Every registered suite name, in registration order."""
    _load_providers()
    return list(_SUITES)


def find_suite(name: str) -> SyntheticSuite | None:
    """The suite called ``name``, or ``None`` when no provider registers one (a real benchmark's name)."""
    _load_providers()
    return _SUITES.get(name)


def get_suite(name: str) -> SyntheticSuite:
    """The suite called ``name``; :class:`ConfigError` naming the registered suites otherwise."""
    suite = find_suite(name)
    if suite is None:
        raise ConfigError(f"suite {name!r} is unknown; choose from {', '.join(_SUITES)}")
    return suite


def prepare_suite(name: str, root: str | Path, size: int | None = None) -> Path:
    """Folder ``root`` holding suite ``name`` at ``size`` (``None``: full size), written unless already there."""
    return get_suite(name).prepare(Path(root), size)
