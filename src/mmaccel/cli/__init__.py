"""The ``mmaccel`` command line.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``, which adds its
parser and sets ``func(args) -> int``. Modules are imported lazily so that ``mmaccel --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from mmaccel.cli.checks import check_flags
from mmaccel.errors import MmaccelError

# Subcommand modules, in the order they appear in ``mmaccel --help``.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "mmaccel.cli.eval",
    "mmaccel.cli.show",
    "mmaccel.cli.demo",
    "mmaccel.cli.listing",
    "mmaccel.cli.score",
    "mmaccel.cli.toy",
)

log = logging.getLogger("mmaccel")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmaccel", description="Accelerate multimodal LLMs and measure the cost.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:  # subcommand not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_flags(args)  # values argparse cannot judge (a device, a thread count, a folder), before any work
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except MmaccelError as error:
        print(f"mmaccel {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (``mmaccel list support | head``): stop quietly
        _silence_stdout()
        return BROKEN_PIPE_EXIT
    except OSError as error:
        if error.filename is None:  # not about a file the user named: a bug to report with its traceback
            raise
        print(f"mmaccel {args.command}: error: {os_error_message(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmaccel {args.command}: interrupted", file=sys.stderr)
        return 130


BROKEN_PIPE_EXIT = 141  # 128 + SIGPIPE, what a shell tool killed by the closed pipe returns


def os_error_message(error: OSError) -> str:
    """``'path': reason`` of an operating-system error on a file (permission, missing folder, disk full)."""
    names = [repr(str(name)) for name in (error.filename, error.filename2) if name is not None]
    reason = error.strerror or type(error).__name__
    return f"{' -> '.join(names)}: {reason.lower()}"


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):  # stdout without a file descriptor (captured in tests)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
