"""The ``mmaccel`` command line.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``, which adds its
parser and sets ``func(args) -> int``. Modules are imported lazily so that ``mmaccel --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

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
        return int(args.func(args) or 0)
    except MmaccelError as error:
        print(f"mmaccel {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmaccel {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
