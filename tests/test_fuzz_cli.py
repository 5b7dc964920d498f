"""Random bad flags and files for ``mmaccel eval``, ``score`` and ``show``: exit code 2 and one message, never a
traceback (exit 0 where the mutated input is valid after all).

Each case starts from a command line that is valid and changes one or two flags or files, drawn from per-flag
pools of bad (and a few good) values with a seeded generator, so a failure replays by its case number. Eval and
show cases are all refused before a model loads; a few cases also run as a real ``python -m mmaccel`` process.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mmaccel.cli import main
from tests.eval._benchmark_data import llava_answers, llava_pope, png_bytes

SEED = 20_250_601
PROCESS_CASES = (3, 41, 77)  # also run as a separate process


@dataclass(frozen=True)
class Change:
    """One mutation: a flag and its new value (``None`` drops the flag), or a rewrite of a file."""

    name: str
    bad: bool
    flag: str | None = None
    value: str | Callable[[Path], str] | None = None
    rewrite: Callable[[Path], None] | None = None  # gets the case folder


def _file(name: str, content: bytes) -> Callable[[Path], str]:
    def make(root: Path) -> str:
        path = root / name
        path.write_bytes(content)
        return str(path)

    return make


def _under_a_file(root: Path) -> str:
    (root / "plain").write_text("x")
    return str(root / "plain" / "inside")


def _folder(root: Path) -> str:
    (root / "folder").mkdir(exist_ok=True)
    return str(root / "folder")


def _missing(root: Path) -> str:
    return str(root / "does-not-exist")


def _predictions(lines: bytes) -> Callable[[Path], None]:
    def rewrite(root: Path) -> None:
        (root / "answers.jsonl").write_bytes(lines)

    return rewrite


ZIP = b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00" + bytes(range(256))
COMMON_FILES = [
    ("missing file", _missing),
    ("a folder", _folder),
    ("a path under a file", _under_a_file),
    ("a spreadsheet", _file("sheet.xlsx", ZIP)),
    ("Latin-1 text", _file("latin.txt", "caf\u00e9: 1\n".encode("latin-1"))),
    ("an empty file", _file("empty.txt", b"")),
]

EVAL_CHANGES = [
    Change("empty method", True, "--method", ""),
    Change("comma method", True, "--method", ","),
    Change("unknown method", True, "--method", "fastvv"),
    Change("repeated method", True, "--method", "pool,pool"),
    Change("empty benchmark", True, "--benchmark", ""),
    Change("unknown benchmark", True, "--benchmark", "shapes-nope"),
    Change("real benchmark without data", True, "--benchmark", "pope"),
    Change("zero budget", True, "--budget", "0"),
    Change("big fraction", True, "--budget", "1.5"),
    Change("text budget", True, "--budget", "half"),
    Change("nan budget", True, "--budget", "nan"),
    Change("repeated budget", True, "--budget", "0.5,0.5"),
    Change("empty budget", True, "--budget", ""),
    Change("negative limit", True, "--limit", "-1"),
    Change("text limit", True, "--limit", "ten"),
    Change("zero batch", True, "--batch-size", "0"),
    Change("zero new tokens", True, "--max-new-tokens", "0"),
    Change("unknown protocol", True, "--protocol", "llava2"),
    Change("unknown dtype", True, "--dtype", "float8"),
    Change("cuda", True, "--device", "cuda"),
    Change("cuda index", True, "--device", "cuda:3"),
    Change("unknown device", True, "--device", "tpu"),
    Change("empty device", True, "--device", ""),
    Change("huge thread count", True, "--threads", "100000"),
    Change("negative threads", True, "--threads", "-2"),
    Change("text seed", True, "--seed", "x"),
    Change("unknown flag", True, "--frobnicate", "1"),
    Change("missing model", True, "--model", _missing),
    Change("model folder without config", True, "--model", _folder),
    Change("empty out", True, "--out", ""),
    Change("out is a file", True, "--out", _file("out.txt", b"x")),
    *[Change(f"out: {name}", True, "--out", make) for name, make in COMMON_FILES[2:3]],
    *[Change(f"config: {name}", True, "--config", make) for name, make in COMMON_FILES[:5]],  # empty: valid
    Change("config is a list", True, "--config", _file("list.yaml", b"- 1\n- 2\n")),
    Change("config with an unknown key", True, "--config", _file("keys.yaml", b"budgetz: 0.5\n")),
    Change("config with bad YAML", True, "--config", _file("bad.yaml", b"methods: [pool\n")),
    Change("data under a file", True, "--data", _under_a_file),
]

SCORE_CHANGES = [
    Change("byte-order mark", False, rewrite=lambda root: _bom(root / "answers.jsonl")),
    Change("unknown benchmark", True, "--benchmark", "popes"),
    Change("other benchmark", True, "--benchmark", "mme"),
    Change("unknown protocol", True, "--protocol", "llava2"),
    Change("unknown split", True, "--split", "hard"),
    Change("missing data", True, "--data", _missing),
    Change("data is a file", True, "--data", _file("data.txt", b"x")),
    Change("empty data folder", True, "--data", _folder),
    Change("corrupt parquet data", True, "--data", lambda root: _corrupt_parquet(root)),
    Change("bad --missing", True, "--missing", "maybe"),
    Change("out: a folder", True, "--out", _folder),
    Change("out: under a file", True, "--out", _under_a_file),
    *[Change(f"predictions: {name}", True, "--predictions", make) for name, make in COMMON_FILES],
    Change("JSON array line", True, rewrite=_predictions(b"[1, 2]\n")),
    Change("wrong keys", True, rewrite=_predictions(b'{"qid": 1, "answer": "Yes"}\n')),
    Change("number as text", True, rewrite=_predictions(b'{"question_id": 1, "text": 5}\n')),
    Change("cut JSON", True, rewrite=_predictions(b'{"question_id": 1, "text": "Ye')),
    Change("unknown id", True, rewrite=_predictions(b'{"question_id": 99, "text": "Yes"}\n')),
    Change("invalid UTF-8 mid-file", True, rewrite=_predictions(b'{"question_id": 1, "text": "\xff"}\n')),
]

SHOW_CHANGES = [
    Change("unknown method", True, "--method", "visionzipp"),
    Change("empty method", True, "--method", ""),
    Change("zero budget", True, "--budget", "0"),
    Change("big fraction", True, "--budget", "1.5"),
    Change("two budgets", True, "--budget", "0.5,0.25"),
    Change("text budget", True, "--budget", "abc"),
    Change("zero new tokens", True, "--max-new-tokens", "0"),
    Change("negative new tokens", True, "--max-new-tokens", "-4"),
    Change("missing model", True, "--model", _missing),
    Change("out: a folder", True, "--out", _folder),
    Change("out: under a file", True, "--out", _under_a_file),
    *[Change(f"image: {name}", True, "--image", make) for name, make in COMMON_FILES],
    Change("image: truncated PNG", True, "--image", lambda root: _truncated_png(root)),
    Change("image: text", True, "--image", _file("notes.png", b"not an image\n")),
]


def _bom(path: Path) -> None:
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def _corrupt_parquet(root: Path) -> str:
    shard = root / "parquet" / "data" / "test-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"PAR1" + bytes(64))
    return str(root / "parquet")


def _truncated_png(root: Path) -> str:
    from PIL import Image

    path = root / "cut.png"
    Image.effect_noise((64, 64), 40).convert("RGB").save(path)
    path.write_bytes(path.read_bytes()[:300])
    return str(path)


def _baseline(command: str, root: Path) -> list[str]:
    """A valid command line (the eval and show ones are never run as they are: every case changes one flag)."""
    if command == "eval":
        return ["eval", "--benchmark", "shapes-pope", "--method", "pool", "--budget", "0.5", "--limit", "1",
                "--out", str(root / "results"), "--no-timing"]  # fmt: skip
    if command == "score":
        data, answers = llava_pope(root / "pope")
        predictions = llava_answers(root / "answers.jsonl", answers)
        return ["score", "--benchmark", "pope", "--data", str(data), "--predictions", str(predictions),
                "--out", str(root / "metrics.json")]  # fmt: skip
    image = root / "image.png"
    image.write_bytes(png_bytes())
    return ["show", "--method", "pool", "--budget", "4", "--image", str(image)]


def _apply(argv: list[str], change: Change, root: Path) -> list[str]:
    if change.rewrite is not None:
        change.rewrite(root)
        return argv
    value = change.value(root) if callable(change.value) else change.value
    if change.flag in argv:
        argv[argv.index(change.flag) + 1] = value
    else:
        argv += [change.flag, value]
    return argv


POOLS = {"eval": EVAL_CHANGES, "score": SCORE_CHANGES, "show": SHOW_CHANGES}
COMMANDS = tuple(POOLS)
CASES = len(COMMANDS) * max(len(pool) for pool in POOLS.values())  # every change of every pool at least once


def draw(number: int) -> tuple[str, list[Change]]:
    """Case ``number``: its command, then the changes of a seeded walk through the command's shuffled pool, each
    score case with a second random change half of the time."""
    command = COMMANDS[number % len(COMMANDS)]
    pool = list(POOLS[command])
    random.Random(SEED).shuffle(pool)
    rng = random.Random(SEED + number)
    changes = [pool[(number // len(COMMANDS)) % len(pool)]]
    if command == "score" and rng.random() < 0.5:
        changes.append(rng.choice([change for change in pool if change is not changes[0]]))
    return command, changes


def case(number: int, root: Path) -> tuple[list[str], list[Change]]:
    command, changes = draw(number)
    argv = _baseline(command, root)
    for change in changes:
        argv = _apply(argv, change, root)
    return argv, changes


def _run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize("number", range(CASES))
def test_bad_input_is_one_message(number, tmp_path, capsys, no_cuda):
    argv, changes = case(number, tmp_path)
    code, output = _run_in_process(argv, capsys)
    expected = 2 if any(change.bad for change in changes) else 0
    described = ", ".join(change.name for change in changes)
    assert "Traceback" not in output, f"{described}: {output}"
    assert code == expected, f"{described}: exit {code}, expected {expected}: {output[-600:]}"
    if expected == 2:
        assert "error" in output.lower(), f"{described}: no message"


def test_every_change_is_drawn():
    drawn = {(command, change.name) for command, changes in map(draw, range(CASES)) for change in changes}
    assert drawn == {(command, change.name) for command, pool in POOLS.items() for change in pool}


@pytest.mark.parametrize("number", PROCESS_CASES)
def test_bad_input_is_one_message_in_a_real_process(number, tmp_path):
    argv, changes = case(number, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "mmaccel", *argv], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    described = ", ".join(change.name for change in changes)
    assert "Traceback" not in done.stderr, f"{described}: {done.stderr}"
    assert done.returncode == (2 if any(change.bad for change in changes) else 0), f"{described}: {done.stderr}"
