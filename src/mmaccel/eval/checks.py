"""Everything ``mmaccel eval`` refuses, checked before the results directory is created or changed.

The model directory (:func:`check_model`, then :func:`load_model`), every (method, budget, options) against the
loaded model (:func:`check_methods`: a budget above the image's or tile's tokens, hyper-parameters out of the
model's range, an unsupported family) and a results directory of another config or other weights
(:func:`check_out_dir`). Each raises :class:`~mmaccel.errors.ConfigError` (or ``NotSupportedError``) with a
message naming the argument; the command line turns it into exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmaccel.errors import ConfigError
from mmaccel.eval.config import BASELINE, RESULT_KEYS, EvalConfig, budget_label
from mmaccel.eval.lock import LOCK_FILE

if TYPE_CHECKING:
    from mmaccel.eval.runner import RunSpec

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "check_methods",
    "check_model",
    "check_out_dir",
    "load_model",
    "model_fingerprint",
]

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.json"  # fingerprint of the checkpoint the predictions came from


def check_model(model: str) -> None:
    """:class:`ConfigError` for a model that is neither ``toy`` nor a checkpoint directory (before any work)."""
    if model == "toy":
        return
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"model={model!r}: not 'toy' and not a directory with a config.json (a local Hugging Face checkpoint)"
        )


def check_methods(runs: list[RunSpec], model: Any) -> None:
    """:class:`ConfigError`/``NotSupportedError`` for a run its method cannot do on ``model`` (a budget above the
    image's tokens, hyper-parameters out of the model's range, an unsupported family), before anything is written.
    """
    from mmaccel.errors import MmaccelError
    from mmaccel.methods.registry import build_method
    from mmaccel.models.registry import adapter_for

    adapter = adapter_for(model)
    checked: set[str] = set()
    for run in runs:
        if run.method == BASELINE or run.key in checked:
            continue
        checked.add(run.key)
        try:
            build_method(run.method, run.budget, **dict(run.options)).validate(adapter)
        except MmaccelError as error:
            raise type(error)(f"--method {run.method} --budget {budget_label(run.budget)}: {error}") from None


def load_model(config: EvalConfig) -> tuple[Any, Any]:
    """``(model, processor)`` of ``config.model``; any failure to read the checkpoint is a :class:`ConfigError`."""
    import torch

    import mmaccel
    from mmaccel.errors import MmaccelError

    try:
        dtype = None if config.dtype == "auto" else getattr(torch, config.dtype)
        return mmaccel.load(config.model, device=config.device, dtype=dtype)
    except MmaccelError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as error:
        raise ConfigError(f"--model {config.model!r} could not be loaded: {type(error).__name__}: {error}") from None


def model_fingerprint(model: str) -> str:
    """A hash of a checkpoint: its config.json and each weight file's name, size and (up to 256 MiB) content."""
    import hashlib

    from mmaccel.loading import TOY_NAME, toy_checkpoint_path

    path = toy_checkpoint_path() if model == TOY_NAME else Path(model).expanduser()
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        size = weights.stat().st_size
        digest.update(f"{weights.name}:{size}".encode())
        if size <= 256 * 2**20:
            digest.update(weights.read_bytes())
    return digest.hexdigest()[:16]


def check_out_dir(config: EvalConfig, out: Path) -> None:
    """Refuse ``out`` when it holds results of a config whose result-determining keys differ (named)."""
    import yaml

    path = out / CONFIG_FILE
    if not path.is_file():
        if out.is_dir() and any(entry.name not in ("data", LOCK_FILE) for entry in out.iterdir()):  # suites, lock
            raise ConfigError(f"--out {str(out)!r} is not empty and holds no {CONFIG_FILE}; choose another --out")
        return
    stored = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    current = config.identity()
    differing = [key for key in RESULT_KEYS if _normal(stored.get(key)) != _normal(current[key])]
    details = [f"{key}: {stored.get(key)!r} there, {current[key]!r} now" for key in differing]
    weights_file = out / WEIGHTS_FILE
    if not differing and weights_file.is_file():
        there = json.loads(weights_file.read_text(encoding="utf-8")).get("model_weights")
        now = model_fingerprint(config.model)
        if there != now:
            differing.append("model weights")
            details.append(f"model weights: {there} there, {now} now (the checkpoint changed)")
    if differing:
        details = "; ".join(details)
        raise ConfigError(
            f"--out {str(out)!r} holds results of a different config ({details}); choose another --out or "
            "rerun with the same values"
        )


def _normal(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
