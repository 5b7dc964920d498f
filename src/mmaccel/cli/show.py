"""``mmaccel show``: a PNG of the tokens a method keeps on one image, with the answers with and without it."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmaccel.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("show", help="picture of the kept (and merged) visual tokens of one image")
    parser.add_argument("--method", required=True, help="a registered method (mmaccel list methods)")
    parser.add_argument("--budget", required=True, help="a fraction in (0, 1] or a token count")
    parser.add_argument("--image", required=True, type=Path, help="image file")
    parser.add_argument("--question", default="What is in the image?", help="the question asked about the image")
    parser.add_argument("--model", default="toy", help="'toy' or a local Hugging Face checkpoint directory")
    parser.add_argument("--out", type=Path, default=None, help="PNG to write (default: <image>.<method>.png)")
    parser.add_argument("--max-new-tokens", type=int, default=8, help="tokens generated per answer, >= 1")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mmaccel.cli.checks import check_output_file, check_positive
    from mmaccel.eval.config import parse_budgets
    from mmaccel.eval.runner import check_model
    from mmaccel.methods.registry import build_method

    budgets = parse_budgets(args.budget)
    if len(budgets) != 1:
        raise ConfigError(f"--budget {args.budget!r}: give one budget")
    build_method(args.method, budgets[0])  # unknown method or bad budget: one message, before loading anything
    check_model(args.model)
    check_positive("--max-new-tokens", args.max_new_tokens)
    if args.image.is_dir():
        raise ConfigError(f"--image {str(args.image)!r} is a folder; give an image file")
    if not args.image.is_file():
        raise ConfigError(f"--image {str(args.image)!r}: no such file")
    out = args.out or args.image.with_name(f"{args.image.stem}.{args.method}-{args.budget}.png")
    check_output_file("--out", out)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(args.image) as handle:
            image = handle.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:  # PIL's errors on bad files
        raise ConfigError(f"--image {str(args.image)!r} is not a readable image: {error}") from None

    import mmaccel
    from mmaccel.eval.show import draw, token_map

    model, processor = mmaccel.load(args.model)
    result = token_map(model, processor, image, args.question, args.method, budgets[0], args.max_new_tokens)
    draw(image, result, out)
    console = Console()
    console.print(f"without {args.method}: {result.baseline_answer!r}; with it: {result.answer!r}")
    console.print(f"{len(result.kept)} kept, {len(result.merged)} merged groups; wrote {out}")
    return 0
