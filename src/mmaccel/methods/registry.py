"""Method registry: names to classes. Third-party methods register through the ``mmaccel.methods`` entry point."""

from __future__ import annotations

import dataclasses
import logging
from importlib.metadata import entry_points
from typing import TypeVar

from mmaccel.errors import ConfigError
from mmaccel.methods.base import TokenMethod

log = logging.getLogger(__name__)

_REGISTRY: dict[str, type[TokenMethod]] = {}
_entry_points_loaded = False

MethodT = TypeVar("MethodT", bound=type[TokenMethod])


def register_method(name: str):
    """Class decorator: ``@register_method("fastv")``. The name is stored on the class as ``name``."""

    def decorate(cls: MethodT) -> MethodT:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method name {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_builtin_and_plugins() -> None:
    global _entry_points_loaded
    import mmaccel.methods  # noqa: F401  (imports every built-in method module)

    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry in entry_points(group="mmaccel.methods"):
        try:
            entry.load()
        except Exception:  # a broken plugin must not break the built-in methods
            log.exception("could not load mmaccel method plugin %s", entry.value)


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    _load_builtin_and_plugins()
    return sorted(_REGISTRY)


def get_method(name: str) -> type[TokenMethod]:
    """The method class registered under ``name``; a ``ConfigError`` lists the known names otherwise."""
    _load_builtin_and_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; known methods: {', '.join(sorted(_REGISTRY))}") from None


def build_method(method: str | TokenMethod, budget: int | float | None = None, **hyperparams) -> TokenMethod:
    """A method instance from a name or an instance; ``budget`` and ``hyperparams`` apply to names only.

    A name needs a budget unless its hyper-parameters set the token counts instead (VisionZip's ``dominant`` and
    ``contextual``, ToMe's ``r``, EViT's ``keep_rate``, SparseVLM's ``schedule``) or the method adapts them
    itself (PruMerge): a budget left out would otherwise keep every token and change nothing.
    """
    if isinstance(method, TokenMethod):
        if budget is not None or hyperparams:
            raise ConfigError("pass budget and hyper-parameters either to the method instance or by name, not both")
        return method
    if not isinstance(method, str):
        raise ConfigError(f"method must be a name or a TokenMethod instance, got {type(method).__name__}")
    cls = get_method(method)
    allowed = {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
    unknown = sorted(set(hyperparams) - allowed)
    if unknown:
        raise ConfigError(
            f"method {method!r} has no hyper-parameter {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    given = budget is not None or hyperparams.get("budget") is not None
    if budget is not None:
        hyperparams["budget"] = budget
    instance = cls(**hyperparams)
    if not given and instance.full_budget():
        raise ConfigError(
            f"method {method!r}: no budget given, and without one it keeps every visual token (the model runs "
            "unchanged); pass budget= a fraction in (0, 1] such as 0.25, or the visual tokens kept per image such "
            "as 64 (budget=1.0 keeps every token on purpose)"
        )
    return instance
