"""Synthetic benchmark suites of the shapes world, in the on-disk formats of the real benchmarks.

``write_suite("shapes-pope", root)`` writes a suite that :func:`mmaccel.eval.benchmarks.get_benchmark` ("pope")
loads from ``root`` and scores with the real scorer. Importing this package registers every image suite with
:mod:`mmaccel.eval.suites`, where ``mmaccel eval`` finds them; the video suites (``shapes-videomme``,
``shapes-mvbench``, ``shapes-nextqa``) are written with :func:`write_suite` and scored with ``mmaccel score``.
See ``docs/toy-suites.md`` for the formats, sizes and standard errors.
"""

from __future__ import annotations

from mmaccel.eval.suites import register_suite
from mmaccel.toy.suites.registry import (
    MANIFEST,
    SUITES,
    VIDEO_SUITES,
    Suite,
    get_suite,
    list_suites,
    read_manifest,
    write_suite,
)

__all__ = ["MANIFEST", "SUITES", "VIDEO_SUITES", "Suite", "get_suite", "list_suites", "read_manifest", "write_suite"]

for _suite in SUITES.values():
    register_suite(_suite)
