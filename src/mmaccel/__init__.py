"""mmaccel: make multimodal LLMs faster and measure what it costs.

Public API::

    import mmaccel
    model, processor = mmaccel.load("toy")          # embedded model, or a local Hugging Face checkpoint path
    with mmaccel.apply(model, "fastv", budget=64) as session:
        out = model.generate(**inputs, max_new_tokens=8)   # the model's own, unmodified generate()
    session.last_call.stats                         # visual tokens in/out per stage, layer-averaged count

Importing this package has no side effects: nothing is registered, patched or configured until ``apply`` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "apply", "get_method", "list_methods", "load"]

if TYPE_CHECKING:
    from mmaccel.engine.apply import apply
    from mmaccel.loading import load
    from mmaccel.methods.registry import get_method, list_methods

_LAZY = {
    "apply": "mmaccel.engine.apply",
    "list_methods": "mmaccel.methods.registry",
    "get_method": "mmaccel.methods.registry",
    "load": "mmaccel.loading",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmaccel' has no attribute {name!r}")
