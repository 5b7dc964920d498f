"""Load a model and its processor: the embedded toy model or a local Hugging Face checkpoint, always offline."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from mmaccel.errors import ConfigError

log = logging.getLogger(__name__)

TOY_NAME = "toy"
TOY_PACKAGE = "mmaccel.toy"
TOY_ASSET_DIR = "assets/toy-llava"


def toy_checkpoint_path() -> Path:
    """Directory of the checkpoint shipped inside the package."""
    return Path(str(resources.files(TOY_PACKAGE).joinpath(TOY_ASSET_DIR)))


def _resolve(name_or_path: str | Path) -> Path:
    if str(name_or_path) == TOY_NAME:
        path = toy_checkpoint_path()
        if not (path / "config.json").is_file():
            raise ConfigError(f"the embedded toy checkpoint is missing from the installed package ({path})")
        return path
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"model {str(name_or_path)!r}: no such directory; pass 'toy' or a local Hugging Face checkpoint directory"
        )
    if not (path / "config.json").is_file():
        raise ConfigError(f"model directory {str(path)!r} has no config.json; it is not a Hugging Face checkpoint")
    return path


def load(
    name_or_path: str | Path = TOY_NAME, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> tuple[Any, Any]:
    """Return ``(model, processor)`` for ``"toy"`` (the embedded model) or a local checkpoint directory.

    Loading never touches the network. ``dtype`` defaults to float32 on CPU and to the checkpoint's own dtype
    elsewhere; the model is returned in eval mode on ``device`` (CPU by default).
    """
    from transformers import AutoModelForImageTextToText

    from mmaccel.models.processor_loading import load_processor

    path = _resolve(name_or_path)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if dtype is None:
        dtype = torch.float32 if device.type == "cpu" else "auto"
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, local_files_only=True)
        processor = load_processor(path)
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(
            f"model directory {str(path)!r} is not a supported image-text checkpoint: {error}"
        ) from error
    model.to(device).eval()
    log.debug("loaded %s (%s) on %s", path, type(model).__name__, device)
    return model, processor
