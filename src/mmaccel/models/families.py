"""The model families mmaccel serves: one entry per adapter, with a tiny random-weight builder for each.

A family is what an adapter serves (``ModelAdapter.name``). The catalogue names it as users know it, gives a
representative checkpoint, and points at the builder in :mod:`mmaccel.models.tiny` that makes a random-weight
model of the family from a config in code (nothing is downloaded). The support matrix
(:mod:`mmaccel.support`), the prefill benchmark and the family-parametrised tests read it.

Adding a family: register its adapter in :mod:`mmaccel.models.registry`, add its tiny builder to
:mod:`mmaccel.models.tiny`, and add one line to :data:`FAMILIES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmaccel.errors import NotSupportedError

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Family:
    adapter: str  # ModelAdapter.name of the adapter serving the family
    title: str  # the family's name as papers and users write it
    checkpoint: str  # a representative Hugging Face checkpoint
    tiny: str  # name of the random-weight builder in mmaccel.models.tiny (called with keyword arguments only)


FAMILIES: tuple[Family, ...] = (
    Family("llava", "LLaVA-1.5", "llava-hf/llava-1.5-7b-hf", "tiny_llava"),
    Family("llava_next", "LLaVA-NeXT", "llava-hf/llava-v1.6-vicuna-7b-hf", "tiny_llava_next"),
    Family("llava_onevision", "LLaVA-OneVision", "llava-hf/llava-onevision-qwen2-7b-ov-hf", "tiny_llava_onevision"),
    Family("qwen2_vl", "Qwen2-VL", "Qwen/Qwen2-VL-7B-Instruct", "tiny_qwen2_vl"),
    Family("qwen2_5_vl", "Qwen2.5-VL", "Qwen/Qwen2.5-VL-7B-Instruct", "tiny_qwen2_5_vl"),
)


def family(name: str) -> Family:
    """The catalogue entry of adapter ``name``; ``NotSupportedError`` lists the known families otherwise."""
    for entry in FAMILIES:
        if entry.adapter == name:
            return entry
    raise NotSupportedError(f"unknown model family {name!r}; known: {', '.join(f.adapter for f in FAMILIES)}")


def registered_families() -> list[Family]:
    """The families whose adapter is registered, in the order of :data:`FAMILIES`.

    Raises ``RuntimeError`` when a registered adapter has no catalogue entry, so that a new adapter cannot be
    left out of the support matrix and the family tests.
    """
    from mmaccel.models.registry import ADAPTERS

    names = [adapter.name for adapter in ADAPTERS]
    missing = sorted(set(names) - {entry.adapter for entry in FAMILIES})
    if missing:
        raise RuntimeError(f"adapters {missing} have no entry in mmaccel.models.families.FAMILIES; add one line each")
    return [entry for entry in FAMILIES if entry.adapter in names]


def build_tiny(name: str, **kwargs) -> nn.Module:
    """A tiny random-weight model of family ``name`` (``kwargs`` go to its builder).

    ``NotSupportedError`` says so when the family's adapter or builder is not part of this installation.
    """
    from mmaccel.models import tiny

    entry = family(name)
    if entry not in registered_families():
        raise NotSupportedError(f"model family {name!r} ({entry.title}) has no adapter registered in this version")
    builder = getattr(tiny, entry.tiny, None)
    if builder is None:
        raise NotSupportedError(f"model family {name!r} has no tiny builder mmaccel.models.tiny.{entry.tiny}")
    return builder(**kwargs)
