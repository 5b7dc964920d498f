"""One evaluation per results directory at a time: an OS file lock on ``<out>/.lock``.

A second ``mmaccel eval`` on a directory another one is writing is refused at once (exit status 2) instead of
waiting: it would otherwise find the same runs unfinished and generate them a second time. The lock is an
``flock``/``LockFileEx`` lock held by the process (``filelock``): the operating system releases it when the
process ends, also after ``kill -9``, so a killed evaluation never leaves the directory locked. Under
``torchrun`` only rank 0 takes it; the other processes follow rank 0 through barriers.
"""

from __future__ import annotations

from pathlib import Path

from mmaccel.errors import ConfigError

__all__ = ["LOCK_FILE", "OutLock"]

LOCK_FILE = ".lock"


class OutLock:
    """``with OutLock(out):`` holds the lock of results directory ``out`` (which must exist), or raises
    :class:`ConfigError` naming the directory when another process holds it."""

    def __init__(self, out: str | Path) -> None:
        from filelock import FileLock

        self.out = Path(out)
        self._lock = FileLock(str(self.out / LOCK_FILE), timeout=0)

    def __enter__(self) -> OutLock:
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise ConfigError(
                f"--out {str(self.out)!r} is in use by another mmaccel eval (it holds {LOCK_FILE} there); wait for "
                "it to finish, then rerun to add your runs, or choose another --out"
            ) from None
        return self

    def __exit__(self, *exc_info) -> None:
        self._lock.release()
