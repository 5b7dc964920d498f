"""Sharding over processes and the append-only prediction files that make runs resumable.

Under ``torchrun`` (or ``accelerate launch``) each process reads ``RANK``/``WORLD_SIZE``, joins a ``gloo`` group
(CPU) or ``nccl`` group (CUDA) and answers every ``world``-th distinct request of a run. Each process appends to
its own part file ``predictions.part-<rank>.jsonl``, one whole JSON line per sample, flushed and synced after
each batch; after a barrier, rank 0 merges the parts into ``predictions.jsonl`` in the benchmark's sample order.
The merged file of a sharded run therefore has the same lines, in the same order, as a single-process run.

A rerun (any world size) reads the merged file and every part file: the ids found there are done. A line torn
by a kill (no final newline, or not valid JSON at the end of a file) is cut off before appending again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmaccel.errors import DataError

__all__ = ["Shard", "append_records", "merge_parts", "read_records", "shard"]

log = logging.getLogger(__name__)
MERGED = "predictions.jsonl"
PART = "predictions.part-{rank}.jsonl"


@dataclass(frozen=True)
class Shard:
    """This process's place: ``rank`` of ``world`` processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    def device(self, device: str) -> str:
        """``cuda`` means this process's own GPU (``cuda:<LOCAL_RANK>``) when several processes run."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.world > 1 else device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def shard(device: str = "cpu") -> Shard:
    """The :class:`Shard` of this process; joins the process group when launched with ``WORLD_SIZE > 1``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world <= 1:
        return Shard()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    log.info("process %d of %d (%s)", rank, world, dist.get_backend())
    return Shard(rank, world, int(os.environ.get("LOCAL_RANK", "0")))


def read_records(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (none when missing); a torn last line is ignored, and cut off with ``repair``."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    good_end = 0
    offset = 0
    for number, line in enumerate(data.splitlines(keepends=True), start=1):
        offset += len(line)
        complete = line.endswith(b"\n")
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            record = False
        if record is False or not complete:
            if offset == len(data):  # the last line: torn by a kill
                log.warning("%s: ignoring an incomplete last line (%d bytes)", path, len(line))
                break
            raise DataError(f"{path}: line {number} is not valid JSON; the file is damaged, delete the run folder")
        if record is not None:
            records.append(record)
        good_end = offset
    if repair and good_end < len(data):
        with path.open("r+b") as handle:
            handle.truncate(good_end)
    return records


def append_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append whole lines and make them durable before returning."""
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def part_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob(PART.format(rank="*")))


def done_records(run_dir: Path) -> dict[str, dict[str, Any]]:
    """id -> record over the merged file and every part file (the first record of an id wins)."""
    done: dict[str, dict[str, Any]] = {}
    for path in [run_dir / MERGED, *part_files(run_dir)]:
        for record in read_records(path):
            done.setdefault(str(record["id"]), record)
    return done


def merge_parts(run_dir: Path, order: list[str]) -> list[dict[str, Any]]:
    """Rewrite ``predictions.jsonl`` with every known record in ``order`` (sample ids), then drop the parts.

    The new file replaces the old one atomically, so a kill leaves either the old files or the merged one.
    """
    done = done_records(run_dir)
    records = [done[sample_id] for sample_id in order if sample_id in done]
    target = run_dir / MERGED
    temporary = run_dir / (MERGED + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    for part in part_files(run_dir):
        part.unlink()
    return records
