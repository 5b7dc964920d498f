"""``mmaccel eval`` on the command line: bad input gives one message and exit 2, a small run prints its table."""

from __future__ import annotations

import pytest

from mmaccel.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--benchmark", "nope"], "unknown benchmark 'nope'"),
        (["--method", "nope"], "unknown method 'nope'"),
        (["--budget", "0.5,x"], "'x' is not a number"),
        (["--budget", "2.5"], "outside (0, 1]"),
        (["--benchmark", "pope"], "pass --data DIR"),
        (["--model", "/no/such/model", "--benchmark", "shapes-gqa"], "model='/no/such/model'"),
        (["--dtype", "float8"], "dtype='float8'"),
    ],
)
def test_bad_input_one_message_exit_2(argv, message, capsys, tmp_path):
    code = main(["eval", "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_data_folder_of_another_benchmark(capsys, tmp_path):
    from mmaccel.toy.suites import write_suite

    write_suite("shapes-gqa", tmp_path / "gqa", 2)
    code = main(["eval", "--benchmark", "pope", "--data", str(tmp_path / "gqa"), "--out", str(tmp_path / "o"),
                 "--method", "none", "--no-timing"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "pope" in err.lower()
    assert not (tmp_path / "o").exists()


def test_config_file_with_an_unknown_key(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("budgts: 0.5\n")
    assert main(["eval", "--config", str(path)]) == 2
    assert "budgts" in capsys.readouterr().err


def test_real_and_synthetic_benchmarks_in_one_command_are_refused(capsys, tmp_path):
    code = main(["eval", "--benchmark", "pope,shapes-gqa", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2 and "separate" in capsys.readouterr().err
