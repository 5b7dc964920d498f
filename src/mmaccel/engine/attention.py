"""The attention-function probe: read a layer's post-RoPE queries and keys without changing its kernel.

``probe_implementation("sdpa")`` registers ``"mmaccel_sdpa"`` (once, on first use, never at import) in
transformers' ``AttentionInterface`` together with the base kernel's mask function (without it every mask
silently disappears). The registered function calls the probe attached to the calling attention module, if
any, with (query, key, attention_mask, scaling), then delegates to the base kernel with the same arguments, so
the layer's output is bit-identical. The base name stays a substring of the new name, which keeps
transformers' sdpa- and flash-specific code paths active.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
from torch import nn

Probe = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor | None, float], None]

PREFIX = "mmaccel_"
_PROBES: dict[int, Probe] = {}  # id(attention module) -> probe, only while a session is open


def attach_probe(module: nn.Module, probe: Probe) -> Callable[[], None]:
    """Attach ``probe`` to one attention module; returns the function that detaches it."""
    key = id(module)
    if key in _PROBES:
        raise RuntimeError(f"{type(module).__name__} already has an mmaccel probe: sessions cannot be nested")
    _PROBES[key] = probe
    return lambda: _PROBES.pop(key, None)


def base_implementation(name: str) -> str:
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name


def _base_function(module: nn.Module, base: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
    if base == "eager":  # each modeling file has its own eager function; it is not in the registry
        return sys.modules[type(module).__module__].eager_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS[base]


def _make_probe_attention(base: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
    def probe_attention(module, query, key, value, attention_mask, *args, **kwargs):
        probe = _PROBES.get(id(module))
        if probe is not None:
            scaling = kwargs.get("scaling")
            probe(module, query, key, attention_mask, query.shape[-1] ** -0.5 if scaling is None else scaling)
        return _base_function(module, base)(module, query, key, value, attention_mask, *args, **kwargs)

    probe_attention.__name__ = f"{PREFIX}{base}_attention"
    return probe_attention


def probe_implementation(current: str) -> str:
    """The registered probe implementation wrapping ``current`` (e.g. "sdpa" -> "mmaccel_sdpa")."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    base = base_implementation(current)
    name = PREFIX + base
    if name not in ALL_ATTENTION_FUNCTIONS.valid_keys():
        AttentionInterface.register(name, _make_probe_attention(base))
    if name not in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping and base in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    return name
