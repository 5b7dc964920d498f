"""Bad command lines end with one message naming the flag or file and exit code 2, before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmaccel.cli import BROKEN_PIPE_EXIT, main
from mmaccel.cli.checks import check_eval_config, max_threads
from mmaccel.errors import ConfigError
from mmaccel.eval.config import load_config
from tests.eval._benchmark_data import llava_answers, llava_pope, png_bytes

EVAL = ["eval", "--benchmark", "shapes-pope", "--method", "pool", "--budget", "0.5", "--limit", "1", "--no-timing"]


def _refused(capsys, argv: list[str], *fragments: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err
    return err


@pytest.fixture
def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# -- mmaccel eval -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_eval_on_cuda_without_cuda_is_refused(tmp_path, capsys, no_cuda, device):
    out = tmp_path / "out"
    _refused(capsys, [*EVAL, "--out", str(out), "--device", device], f"--device '{device}': CUDA is not available")
    assert not out.exists()


def test_eval_on_an_unknown_device_is_refused(tmp_path, capsys):
    _refused(capsys, [*EVAL, "--out", str(tmp_path / "o"), "--device", "gpu"], "--device 'gpu' is not a device name")


@pytest.mark.parametrize("threads", ["100000", "-1"])
def test_eval_thread_counts_are_bounded(tmp_path, capsys, threads):
    out = tmp_path / "out"
    _refused(capsys, [*EVAL, "--out", str(out), "--threads", threads], f"--threads {threads}: must be an integer")
    assert not out.exists()
    assert max_threads() == 4 * os.cpu_count()


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--method", "", "--method '': no name given"),
        ("--method", " , ", "--method ' , ': no name given"),
        ("--method", "pool,,fastv", "--method 'pool,,fastv': an empty name between commas"),
        ("--method", "pool,pool", "--method names pool more than once"),
        ("--method", "pool fastv pool", "--method names pool more than once"),
        ("--benchmark", "", "--benchmark '': no name given"),
        ("--budget", "0.5,0.5", "budget='0.5,0.5': 0.5 is given twice"),
        ("--budget", "4 4", "budget='4 4': 4 is given twice"),
    ],
)
def test_eval_names_and_budgets_are_checked(tmp_path, capsys, flag, value, message):
    argv = [*EVAL, "--out", str(tmp_path / "out")]
    argv[argv.index(flag) + 1] = value
    _refused(capsys, argv, message)
    assert not (tmp_path / "out").exists()


def test_eval_out_that_cannot_be_a_folder_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _refused(capsys, [*EVAL, "--out", str(blocker / "sub")], f"'{blocker}' is a file, not a folder")
    _refused(capsys, [*EVAL, "--out", str(blocker)], f"--out '{blocker}' is a file")
    _refused(capsys, [*EVAL, "--out", ""], "--out '': give a folder")


def test_eval_out_in_a_read_only_folder_is_refused(tmp_path, capsys, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path and real_access(path, mode))
    _refused(capsys, [*EVAL, "--out", str(tmp_path / "out")], f"the folder '{tmp_path}' is not writable")


def test_config_file_values_get_the_same_checks(tmp_path, no_cuda):
    config = tmp_path / "c.yaml"
    config.write_text("threads: 100000\n")
    with pytest.raises(ConfigError, match=r"--threads 100000: must be an integer from 0"):
        check_eval_config(load_config(config))
    config.write_text("device: cuda\n")
    with pytest.raises(ConfigError, match=r"CUDA is not available"):
        check_eval_config(load_config(config))
    config.write_text(f"out: {tmp_path / 'results'}\nbudgets: [1, 1.0]\n")
    check_eval_config(load_config(config))


# -- mmaccel score and show -------------------------------------------------------------------------------------------


def test_score_out_that_cannot_be_written_is_refused(tmp_path, capsys):
    data, answers = llava_pope(tmp_path / "data")
    predictions = llava_answers(tmp_path / "a.jsonl", answers)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = ["score", "--benchmark", "pope", "--data", str(data), "--predictions", str(predictions), "--out"]
    _refused(capsys, [*argv, str(blocker / "m.json")], f"--out '{blocker / 'm.json'}': cannot create the file")
    _refused(capsys, [*argv, str(tmp_path)], f"--out '{tmp_path}' is a folder; give a file name")


def test_a_failing_write_is_a_message_not_a_traceback(tmp_path, capsys, monkeypatch):
    data, answers = llava_pope(tmp_path / "data")
    predictions = llava_answers(tmp_path / "a.jsonl", answers)
    out = tmp_path / "m.json"

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full_disk)
    argv = ["score", "--benchmark", "pope", "--data", str(data), "--predictions", str(predictions)]
    _refused(capsys, [*argv, "--out", str(out)], f"mmaccel score: error: '{out}': no space left on device")


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "image.png"
    path.write_bytes(png_bytes())
    return path


def test_show_refuses_zero_new_tokens(image, capsys):
    argv = ["show", "--method", "pool", "--budget", "4", "--image", str(image), "--max-new-tokens", "0"]
    _refused(capsys, argv, "--max-new-tokens 0: must be a positive integer")


def test_show_refuses_an_out_it_cannot_write_and_a_folder_as_image(image, tmp_path, capsys):
    argv = ["show", "--method", "pool", "--budget", "4", "--image", str(image)]
    _refused(capsys, [*argv, "--out", str(image / "x.png")], f"'{image}' is a file, not a folder")
    _refused(capsys, [*argv, "--out", str(tmp_path)], f"--out '{tmp_path}' is a folder")
    argv[argv.index("--image") + 1] = str(tmp_path)
    _refused(capsys, argv, f"--image '{tmp_path}' is a folder")


# -- output into a closed pipe ----------------------------------------------------------------------------------------


def test_a_closed_pipe_ends_quietly(capsys, monkeypatch):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["list", "methods"]) == BROKEN_PIPE_EXIT
    assert "Traceback" not in capsys.readouterr().err


def test_a_listing_into_a_pipe_closed_early_prints_no_traceback():
    read, write = os.pipe()
    os.close(read)  # like `mmaccel list methods | head -0`
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "mmaccel", "list", "methods"],
        stdout=write,
        stderr=subprocess.PIPE,
        env=env,
        check=False,
    )
    os.close(write)
    assert done.returncode == BROKEN_PIPE_EXIT
    assert done.stderr.decode() == ""


def test_eval_refuses_config_file_values_before_writing(tmp_path, capsys, no_cuda):
    config = tmp_path / "c.yaml"
    out = tmp_path / "out"
    config.write_text(f"threads: 100000\nout: {out}\n")
    _refused(capsys, ["eval", "--config", str(config)], "--threads 100000: must be an integer from 0")
    assert not out.exists()
