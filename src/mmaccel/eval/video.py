"""Read the frames a video model sees: from video files through PyAV, or from folders of frame images.

Sampling (exactly one of ``frames`` and ``fps``):

* ``frames=N``: ``np.linspace(0, total - 1, N).astype(int)``, N indices evenly spaced from the first frame to the
  last, the rule of lmms-eval's video loaders. Indices repeat when N exceeds the frame count, so a model always
  receives N frames.
* ``fps=F``: every ``round(native_fps / F)``-th frame from the first (at least every frame), the ``--fps`` rule of
  lmms-eval's LLaVA-Video loader; ``max_frames`` then caps the count with the ``frames`` rule over those indices.

``bound=(start, end)`` in seconds restricts sampling to frames ``round(start * fps)`` to ``round(end * fps)``
(MVBench clips with a start and end). :func:`segment_indices` is MVBench's own rule (the middle of N equal
segments), for reproducing its reference runs.

Video files are decoded with PyAV (``pip install 'mmaccel[video]'``), sequentially, converting only the sampled
frames to arrays. Frame folders hold one image per frame; files are ordered by name with digit runs compared as
numbers (``frame_9.jpg`` before ``frame_10.jpg``); their frame rate is given by the caller (``folder_fps``).
Every error names the file at fault.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np

from mmaccel.errors import ConfigError, DataError

__all__ = [
    "FRAME_EXTENSIONS",
    "VideoFrames",
    "fps_indices",
    "frame_files",
    "load_video",
    "segment_indices",
    "uniform_indices",
    "video_length",
]

log = logging.getLogger(__name__)
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_DIGITS = re.compile(r"(\d+)")


@dataclasses.dataclass
class VideoFrames:
    """Frames sampled from one video.

    Attributes:
        frames: uint8 RGB array [N, H, W, 3].
        indices: the frame index of each sampled frame (0-based, in the video's order).
        timestamps: seconds of each sampled frame (``index / native_fps``); ``None`` when the rate is unknown.
        native_fps: frames per second of the source (``None`` for a frame folder without ``folder_fps``).
        total: number of frames in the source.
        source: the file or folder read.
    """

    frames: np.ndarray
    indices: list[int]
    timestamps: list[float] | None
    native_fps: float | None
    total: int
    source: str


def uniform_indices(total: int, frames: int, first: int = 0, last: int | None = None) -> list[int]:
    """``frames`` indices evenly spaced over ``first..last`` (default the whole video), both ends included."""
    if total < 1:
        raise ConfigError(f"total={total}: a video needs at least one frame")
    if frames < 1:
        raise ConfigError(f"frames={frames}: must be a positive number of frames")
    last = total - 1 if last is None else min(last, total - 1)
    first = min(max(first, 0), last)
    return np.linspace(first, last, frames).astype(int).tolist()


def fps_indices(total: int, native_fps: float, fps: float, first: int = 0, last: int | None = None) -> list[int]:
    """Every ``round(native_fps / fps)``-th index from ``first`` to ``last`` (at least one step of 1)."""
    if fps <= 0:
        raise ConfigError(f"fps={fps}: must be positive")
    if native_fps <= 0:
        raise ConfigError(f"native_fps={native_fps}: the source frame rate must be positive")
    last = total - 1 if last is None else min(last, total - 1)
    step = max(1, round(native_fps / fps))
    return list(range(max(first, 0), last + 1, step))


def segment_indices(
    total: int, frames: int, native_fps: float, bound: tuple[float, float] | None = None, first: int = 0
) -> list[int]:
    """MVBench's rule: split ``[start, end]`` into ``frames`` equal segments and take the middle of each.

    ``start = max(first, round(bound[0] * fps))``, ``end = min(round(bound[1] * fps), total - 1)``; without a
    bound the whole video. ``first=1`` reproduces its frame-folder reader (frames numbered from 1).
    """
    if frames < 1:
        raise ConfigError(f"frames={frames}: must be a positive number of frames")
    start_s, end_s = bound if bound is not None else (-100_000.0, 100_000.0)
    start = max(first, round(start_s * native_fps))
    end = min(round(end_s * native_fps), total - 1)
    size = (end - start) / frames
    return [int(start + size / 2 + np.round(size * k)) for k in range(frames)]


def _choose(
    total: int,
    native_fps: float | None,
    frames: int | None,
    fps: float | None,
    max_frames: int | None,
    bound: tuple[float, float] | None,
    source: Path,
) -> list[int]:
    if (frames is None) == (fps is None):
        raise ConfigError("give exactly one of frames= (a frame count) and fps= (frames per second)")
    first, last = 0, total - 1
    if bound is not None:
        if native_fps is None:
            raise ConfigError(f"bound={bound}: {source} has no known frame rate (pass folder_fps=)")
        first, last = max(0, round(bound[0] * native_fps)), min(total - 1, round(bound[1] * native_fps))
        if first > last:
            raise ConfigError(f"bound={bound}: outside {source} ({total} frames at {native_fps:g} fps)")
    if frames is not None:
        return uniform_indices(total, frames, first, last)
    if native_fps is None:
        raise ConfigError(f"fps={fps}: {source} has no known frame rate (pass folder_fps=)")
    indices = fps_indices(total, native_fps, fps, first, last)
    if max_frames is not None and len(indices) > max_frames:
        indices = [indices[i] for i in uniform_indices(len(indices), max_frames)]
    return indices


def load_video(
    path: str | Path,
    frames: int | None = None,
    fps: float | None = None,
    *,
    max_frames: int | None = None,
    bound: tuple[float, float] | None = None,
    folder_fps: float | None = None,
) -> VideoFrames:
    """Sample frames from a video file or a folder of frame images (see the module docstring for the rules)."""
    source = Path(path)
    if source.is_dir():
        return _load_folder(source, frames, fps, max_frames, bound, folder_fps)
    if not source.is_file():
        raise DataError(f"{source}: video not found")
    return _load_file(source, frames, fps, max_frames, bound)


def video_length(path: str | Path, folder_fps: float | None = None) -> tuple[int, float | None]:
    """``(frame count, frames per second)`` of a video file or frame folder, without decoding frames."""
    source = Path(path)
    if source.is_dir():
        return len(frame_files(source)), folder_fps
    if not source.is_file():
        raise DataError(f"{source}: video not found")
    av = _import_av()
    with _open(av, source) as container:
        stream = container.streams.video[0]
        return _frame_count(av, source, container, stream), _stream_fps(stream)


# ---------------------------------------------------------------------------------------------- frame folders


def _natural_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(name)]


def frame_files(folder: str | Path) -> list[Path]:
    """The image files of a frame folder, in natural name order; :class:`DataError` when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: frame folder not found")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS]
    if not files:
        raise DataError(f"{folder}: no frame images ({', '.join(FRAME_EXTENSIONS)}) in the folder")
    return sorted(files, key=lambda p: _natural_key(p.name))


def _load_folder(
    folder: Path,
    frames: int | None,
    fps: float | None,
    max_frames: int | None,
    bound: tuple[float, float] | None,
    folder_fps: float | None,
) -> VideoFrames:
    from PIL import Image, UnidentifiedImageError

    files = frame_files(folder)
    indices = _choose(len(files), folder_fps, frames, fps, max_frames, bound, folder)
    arrays: dict[int, np.ndarray] = {}
    for index in sorted(set(indices)):
        try:
            with Image.open(files[index]) as image:
                arrays[index] = np.asarray(image.convert("RGB"))
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"{files[index]}: cannot read the frame image ({error})") from None
    shapes = {array.shape for array in arrays.values()}
    if len(shapes) > 1:
        raise DataError(f"{folder}: frame images differ in size {sorted(shapes)}")
    stacked = np.stack([arrays[i] for i in indices])  # [N, H, W, 3]
    times = [i / folder_fps for i in indices] if folder_fps else None
    return VideoFrames(stacked, indices, times, folder_fps, len(files), str(folder))


# ------------------------------------------------------------------------------------------------ video files


def _import_av():
    try:
        import av
    except ImportError as error:
        raise DataError("decoding video files needs PyAV: pip install 'mmaccel[video]'") from error
    return av


def _open(av, path: Path):
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise DataError(f"{path}: not a readable video file ({error})") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"{path}: the file has no video stream")
    return container


def _stream_fps(stream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


def _frame_count(av, path: Path, container, stream) -> int:
    """The container's frame count, or the number of video packets when the container does not record it."""
    if stream.frames > 0:
        return int(stream.frames)
    try:
        count = sum(1 for packet in container.demux(stream) if packet.size)
    except av.FFmpegError as error:
        raise DataError(f"{path}: corrupt video data ({error})") from None
    container.seek(0)
    if count < 1:
        raise DataError(f"{path}: the video stream has no frames")
    return count


def _decode(av, path: Path, wanted: set[int]) -> tuple[dict[int, np.ndarray], int, bool]:
    """Arrays of the ``wanted`` frames, the number of frames decoded and whether the stream was read to its end."""
    kept: dict[int, np.ndarray] = {}
    count, stop = 0, max(wanted)
    with _open(av, path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                if count in wanted:
                    kept[count] = frame.to_ndarray(format="rgb24")  # [H, W, 3]
                count += 1
                if count > stop:
                    return kept, count, False
        except av.FFmpegError as error:
            raise DataError(f"{path}: corrupt video data at frame {count} ({error})") from None
    return kept, count, True


def _load_file(
    path: Path, frames: int | None, fps: float | None, max_frames: int | None, bound: tuple[float, float] | None
) -> VideoFrames:
    av = _import_av()
    with _open(av, path) as container:
        stream = container.streams.video[0]
        native_fps = _stream_fps(stream)
        total = _frame_count(av, path, container, stream)
    indices = _choose(total, native_fps, frames, fps, max_frames, bound, path)
    kept, decoded, ended = _decode(av, path, set(indices))
    if ended and decoded != total:  # the container's count was wrong: sample again over the frames really there
        if decoded < 1:
            raise DataError(f"{path}: no frame could be decoded")
        log.warning("%s: the container records %d frames, %d were decoded; sampling over %d", path, total, decoded,
                    decoded)  # fmt: skip
        total = decoded
        indices = _choose(total, native_fps, frames, fps, max_frames, bound, path)
        kept, decoded, ended = _decode(av, path, set(indices))
    stacked = np.stack([kept[i] for i in indices])  # [N, H, W, 3]
    times = [i / native_fps for i in indices] if native_fps else None
    return VideoFrames(stacked, indices, times, native_fps, total, str(path))
