"""Load a checkpoint's processor, also where video processors cannot be built (no ``torchvision``).

Hugging Face builds the video processor of Qwen2-VL, Qwen2.5-VL and LLaVA-OneVision with ``torchvision``; without
it ``AutoProcessor.from_pretrained`` fails on those checkpoints even for images. :func:`load_processor` then builds
the same processor class with its image processor, tokenizer and chat template and no video processor: images
work as usual, videos raise.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["image_only", "load_processor", "video_processors_available"]

_CONFIG_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
_COMPONENTS = ("image_processor", "tokenizer", "video_processor", "chat_template")


def video_processors_available() -> bool:
    """Whether Hugging Face can build video processors here (they need ``torchvision``)."""
    return importlib.util.find_spec("torchvision") is not None


def image_only(processor_class: type) -> type:
    """A subclass of ``processor_class`` that accepts ``video_processor=None`` (images only), same class name."""

    def check_argument_for_proper_class(self, argument_name: str, argument: Any):
        if argument_name == "video_processor" and argument is None:
            return None
        return processor_class.check_argument_for_proper_class(self, argument_name, argument)

    namespace = {
        "check_argument_for_proper_class": check_argument_for_proper_class,
        "__doc__": processor_class.__doc__,
    }
    return type(processor_class.__name__, (processor_class,), namespace)


def load_processor(path: str | Path) -> Any:
    """``AutoProcessor.from_pretrained(path)`` offline; without ``torchvision``, an image-only processor for the
    families whose processor also holds a video processor. Other failures propagate unchanged."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path, local_files_only=True)
    except (ImportError, OSError, ValueError, TypeError, AttributeError):
        if video_processors_available():
            raise
        processor = _image_only_processor(Path(path))
        if processor is None:
            raise
        log.warning("torchvision is not installed: %s loaded without its video processor (images only)", path)
        return processor


def _processor_config(path: Path) -> dict[str, Any]:
    for name in _CONFIG_FILES:
        file = path / name
        if file.is_file():
            config = json.loads(file.read_text(encoding="utf-8"))
            if "processor_class" in config:
                return config
    return {}


def _chat_template(path: Path, config: dict[str, Any]) -> str | None:
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
    return config.get("chat_template")


def _image_only_processor(path: Path) -> Any | None:
    """The processor of ``path`` built without a video processor, or ``None`` when its class has none."""
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    config = _processor_config(path)
    processor_class = getattr(transformers, str(config.get("processor_class")), None)
    if processor_class is None or "video_processor" not in processor_class.get_attributes():
        return None
    parameters = inspect.signature(processor_class.__init__).parameters
    options = {key: value for key, value in config.items() if key in parameters and key not in _COMPONENTS}
    return image_only(processor_class)(
        image_processor=AutoImageProcessor.from_pretrained(path, local_files_only=True),
        tokenizer=AutoTokenizer.from_pretrained(path, local_files_only=True),
        video_processor=None,
        chat_template=_chat_template(path, config),
        **options,
    )
