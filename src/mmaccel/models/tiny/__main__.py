"""``python -m mmaccel.models.tiny FAMILY OUT_DIR [--seed N]``: write a tiny random checkpoint directory."""

from __future__ import annotations

import argparse
import sys

from mmaccel.models.tiny.checkpoint import CHECKPOINT_FAMILIES, write_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mmaccel.models.tiny",
        description="Write a complete tiny random-weight checkpoint (weights, config, processor, tokenizer, "
        "chat template) that mmaccel.load and mmaccel eval --model accept offline.",
    )
    parser.add_argument("family", choices=list(CHECKPOINT_FAMILIES), help="model family")
    parser.add_argument("out_dir", help="directory to write (created)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    args = parser.parse_args(argv)
    out = write_checkpoint(args.family, args.out_dir, seed=args.seed)
    print(f"{args.family}: tiny random checkpoint written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
