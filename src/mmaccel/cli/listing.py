"""``mmaccel list methods|models|benchmarks|support``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "list", help="list methods, supported models, benchmarks, or the method x model-family support matrix"
    )
    parser.add_argument("what", choices=["methods", "models", "benchmarks", "support"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.what == "methods":
        from mmaccel.methods import get_method, list_methods

        for name in list_methods():
            cls = get_method(name)
            summary = (cls.__doc__ or "").strip().splitlines()[0]
            print(f"{name:12s} {cls.stage.name:14s} {summary}")
    elif args.what == "models":
        from mmaccel.models import supported_models

        print("\n".join(supported_models()))
    elif args.what == "support":
        from mmaccel.support import render, support_matrix

        print(render(support_matrix()))
    else:
        from mmaccel.eval.benchmarks.registry import list_benchmarks

        print("\n".join(list_benchmarks()))
    return 0
