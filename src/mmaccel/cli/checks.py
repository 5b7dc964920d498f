"""Checks of command-line values that the config cannot see, run before anything is loaded or written.

Each raises :class:`~mmaccel.errors.ConfigError` naming the flag, the value and what is allowed; the command
line turns it into one message and exit code 2.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from mmaccel.errors import ConfigError

__all__ = [
    "MAX_THREADS_PER_CORE",
    "check_device",
    "check_eval_config",
    "check_eval_flags",
    "check_flags",
    "check_names",
    "check_output_dir",
    "check_output_file",
    "check_positive",
    "check_threads",
]

MAX_THREADS_PER_CORE = 4  # --threads above cores x this is refused (thread pools that large crash torch)


def check_flags(args: argparse.Namespace) -> None:
    """The checks of the flags given to a command that its own code leaves to this module (``mmaccel eval``)."""
    if getattr(args, "command", None) == "eval":
        check_eval_flags(args)


def check_eval_flags(args: argparse.Namespace) -> None:
    """``mmaccel eval``'s flags as given: a ``--config`` file that is not UTF-8 text, empty or repeated names in
    ``--method`` and ``--benchmark``, repeated budgets, the device, the thread count and the output folder."""
    from mmaccel.eval.benchmarks.loaders import read_text
    from mmaccel.eval.config import parse_budgets

    if getattr(args, "config", None) is not None:
        read_text(Path(args.config), "YAML config file")  # a folder, a missing or a binary file: named
    for flag in ("--method", "--benchmark"):
        check_names(flag, getattr(args, flag.lstrip("-"), None))  # repeated names and budgets: eval.config/runner
    if getattr(args, "budget", None) is not None:
        parse_budgets(args.budget)
    if getattr(args, "device", None) is not None:
        check_device(args.device)
    if getattr(args, "threads", None) is not None:
        check_threads(args.threads)
    if getattr(args, "out", None) is not None:
        check_output_dir("--out", args.out)


def check_eval_config(config: Any) -> None:
    """The same checks on the merged config (flags over a ``--config`` file): the device, the thread count and the
    output folder (repeated names and budgets are refused where the config and the run plan are read)."""
    check_device(config.device)
    check_threads(config.threads)
    check_output_dir("--out", config.out)


def check_names(flag: str, value: str | None) -> None:
    """A comma-separated list of names given on the command line must name at least one, with no empty item
    (``--method ""`` would otherwise select every method)."""
    if value is None:
        return
    items = [item.strip() for item in value.split(",")]
    if not any(items):
        raise ConfigError(f"{flag} {value!r}: no name given; give one or more names separated by commas")
    if "" in items:
        raise ConfigError(f"{flag} {value!r}: an empty name between commas; give names separated by commas")


def check_device(device: str) -> None:
    """``cpu``, ``cuda``, ``cuda:N`` (N below the visible GPU count) or ``mps``, available on this machine."""
    import torch

    allowed = "cpu, cuda, cuda:N or mps"
    if not isinstance(device, str) or not device.strip():
        raise ConfigError(f"--device {device!r}: give a device: {allowed}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device!r} is not a device name; allowed: {allowed}") from None
    if parsed.type == "cpu":
        return
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device!r}: CUDA is not available on this machine (torch "
                              f"{torch.__version__}, no usable GPU); use --device cpu")  # fmt: skip
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(f"--device {device!r}: this machine has {count} GPU(s): cuda:0 to cuda:{count - 1}")
        return
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {device!r}: MPS is not available on this machine; use --device cpu")
        return
    raise ConfigError(f"--device {device!r}: device type {parsed.type!r} is not supported; allowed: {allowed}")


def max_threads() -> int:
    return MAX_THREADS_PER_CORE * (os.cpu_count() or 1)


def check_threads(threads: int) -> None:
    """0 (torch's choice) up to :data:`MAX_THREADS_PER_CORE` threads per CPU core of this machine."""
    limit = max_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= limit:
        raise ConfigError(
            f"--threads {threads!r}: must be an integer from 0 (torch's choice) to {limit} "
            f"({MAX_THREADS_PER_CORE} per CPU core; this machine has {os.cpu_count()})"
        )


def check_positive(flag: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{flag} {value!r}: must be a positive integer")


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor."""
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _check_creatable(flag: str, path: Path, what: str) -> None:
    """``path`` (missing) can be made: its nearest existing ancestor is a writable folder."""
    ancestor = _first_existing(path.parent if path.parent != path else path)
    if not ancestor.is_dir():
        raise ConfigError(f"{flag} {str(path)!r}: cannot create the {what}, {str(ancestor)!r} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {str(path)!r}: cannot create the {what}, the folder {str(ancestor)!r} is not "
                          "writable")  # fmt: skip


def check_output_dir(flag: str, out: str | Path) -> None:
    """``out`` is a writable folder, or can be created as one."""
    if str(out).strip() == "":
        raise ConfigError(f"{flag} {str(out)!r}: give a folder to write the results to")
    path = Path(out).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{flag} {str(out)!r} is a file; give a folder (new or holding earlier results)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {str(out)!r}: the folder is not writable")
        return
    _check_creatable(flag, path, "folder")


def check_output_file(flag: str, out: str | Path) -> None:
    """``out`` is a file that can be written: not a folder, in a folder that exists or can be created."""
    if str(out).strip() == "":
        raise ConfigError(f"{flag} {str(out)!r}: give a file name")
    path = Path(out).expanduser()
    if path.is_dir():
        raise ConfigError(f"{flag} {str(out)!r} is a folder; give a file name")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{flag} {str(out)!r}: the file is not writable")
        return
    _check_creatable(flag, path, "file")
