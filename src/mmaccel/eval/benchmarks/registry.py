"""Name -> :class:`~mmaccel.eval.benchmarks.base.Benchmark` registry."""

from __future__ import annotations

from mmaccel.errors import ConfigError
from mmaccel.eval.benchmarks.base import Benchmark

__all__ = ["get_benchmark", "list_benchmarks", "register_benchmark"]

_REGISTRY: dict[str, type[Benchmark]] = {}


def register_benchmark(cls: type[Benchmark]) -> type[Benchmark]:
    """Class decorator: register a benchmark under its ``name`` (lowercase)."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    key = cls.name.lower()
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        raise ValueError(f"benchmark {key!r} is already registered by {_REGISTRY[key].__qualname__}")
    _REGISTRY[key] = cls
    return cls


def _ensure_builtins() -> None:
    import mmaccel.eval.benchmarks  # noqa: F401  (importing the package registers the built-in benchmarks)
    from mmaccel.eval.benchmarks import mvbench, nextqa, videomme  # noqa: F401  (the video benchmarks)


def get_benchmark(name: str) -> Benchmark:
    """A new instance of the benchmark called ``name`` (case-insensitive, ``-`` and ``_`` alike)."""
    _ensure_builtins()
    key = name.lower().replace("-", "_")
    aliases = {"sqa": "scienceqa_img", "scienceqa": "scienceqa_img", "sqa_img": "scienceqa_img"}
    key = aliases.get(key, key)
    if key not in _REGISTRY:
        raise ConfigError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(list_benchmarks())}")
    return _REGISTRY[key]()


def list_benchmarks() -> list[str]:
    """Names of the registered benchmarks, sorted."""
    _ensure_builtins()
    return sorted(_REGISTRY)
