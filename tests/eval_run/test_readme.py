"""The README's quick start runs as written, on the embedded toy model, and its comments state what it returns."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _quick_start_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_quick_start_runs_as_written_and_its_comments_hold():
    blocks = _quick_start_blocks()
    assert blocks, "README.md has no python block under '## Quick start'"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # as a reader would paste it
    code = "\n".join(blocks)
    stats, inputs, logits = namespace["stats"], namespace["inputs"], namespace["logits"]
    # the values the comments promise
    assert (stats.llm_input_tokens, stats.equivalent_tokens, stats.stages) == (16, 16.0, {"vision_output": (64, 16)})
    assert "# 16, 16.0, {'vision_output': (64, 16)}" in code
    assert inputs["input_ids"].shape[1] == 76 and "76 positions, 64 of the image" in code
    assert logits.shape[:2] == (1, 28) and "(1, 28, vocab)" in code
    assert isinstance(namespace["answer"], str)
