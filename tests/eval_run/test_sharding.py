"""Two processes under torchrun (gloo, CPU) write the same results directory as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mmaccel.eval.config import EvalConfig
from mmaccel.eval.runner import evaluate


def _without_timing(line: dict) -> dict:
    return {**line, "efficiency": {k: v for k, v in line["efficiency"].items() if k != "timing"}}


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "data" not in p.parts)


def test_two_processes_equal_one(toy, tmp_path):
    common = dict(
        benchmarks=["shapes-gqa", "shapes-mme"], methods=["none", "fastervlm"], budgets=[0.25], limit=1,
        batch_size=1, max_new_tokens=3, data=str(tmp_path / "data"), timing=False,
    )  # fmt: skip
    single = tmp_path / "single"
    evaluate(EvalConfig(out=str(single), **common), loaded_model=toy)
    sharded = tmp_path / "sharded"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "mmaccel", "eval", "--benchmark", "shapes-gqa,shapes-mme", "--method", "none,fastervlm",
        "--budget", "0.25", "--limit", "1", "--batch-size", "1", "--max-new-tokens", "3", "--threads", "1",
        "--data", common["data"], "--out", str(sharded), "--no-timing", "--no-report",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _files(single) == _files(sharded)
    summary = json.loads((sharded / "metrics.json").read_text())
    assert summary["fingerprint"] == json.loads((single / "metrics.json").read_text())["fingerprint"]
    assert json.loads((sharded / "environment.json").read_text())["processes"] == 2
    for run in summary["runs"]:
        lines = {}
        for root in (single, sharded):
            text = (root / run["run"] / "predictions.jsonl").read_text().splitlines()
            lines[root] = [_without_timing(json.loads(line)) for line in text]
        assert lines[single] == lines[sharded], run["run"]
        assert len(lines[single]) == run["samples"]
