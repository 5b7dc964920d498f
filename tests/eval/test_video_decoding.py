"""Video decoding: a tiny mp4 written here with PyAV (grey level = 10 x frame index), and frame folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmaccel.errors import ConfigError, DataError
from mmaccel.eval.video import fps_indices, frame_files, load_video, segment_indices, uniform_indices, video_length

FRAMES, SIZE, RATE, STEP = 24, 32, 8, 10


def write_mp4(path: Path, frames: int = FRAMES, rate: int = RATE) -> Path:
    """``frames`` frames of SIZE x SIZE, frame k filled with grey level STEP * k, at ``rate`` fps (mpeg4)."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        stream.options = {"qscale": "1"}
        for k in range(frames):
            image = np.full((SIZE, SIZE, 3), STEP * k, dtype=np.uint8)  # [H, W, 3]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def frame_numbers(frames: np.ndarray) -> list[int]:
    """The frame index each decoded frame encodes (lossy coding moves grey levels by a few units)."""
    return [round(float(frame.mean()) / STEP) for frame in frames]


def test_uniform_indices_follow_linspace_over_the_frames():
    assert uniform_indices(24, 4) == [0, 7, 15, 23]
    assert uniform_indices(24, 1) == [0]
    assert uniform_indices(3, 5) == [0, 0, 1, 1, 2]  # more frames than the video: indices repeat
    assert uniform_indices(100, 3, first=10, last=20) == [10, 15, 20]
    with pytest.raises(ConfigError, match="frames=0"):
        uniform_indices(24, 0)


def test_fps_and_segment_indices():
    assert fps_indices(24, 8.0, 2.0) == [0, 4, 8, 12, 16, 20]
    assert fps_indices(5, 2.0, 8.0) == [0, 1, 2, 3, 4]  # asking for more than the source gives every frame
    # MVBench: 4 segments of [0, 23] (size 5.75), the middle of each: int(2.875 + round(5.75 k))
    assert segment_indices(24, 4, 8.0) == [2, 8, 14, 19]
    assert segment_indices(300, 2, 3.0, bound=(10.0, 20.0), first=1) == [37, 52]
    with pytest.raises(ConfigError, match="fps=0"):
        fps_indices(24, 8.0, 0)


def test_mp4_sampled_by_frame_count(tmp_path):
    path = write_mp4(tmp_path / "clip.mp4")
    clip = load_video(path, frames=4)
    assert clip.frames.shape == (4, SIZE, SIZE, 3)
    assert clip.frames.dtype == np.uint8
    assert clip.indices == [0, 7, 15, 23]
    assert frame_numbers(clip.frames) == [0, 7, 15, 23]
    assert clip.total == FRAMES
    assert clip.native_fps == pytest.approx(RATE)
    assert clip.timestamps == pytest.approx([0.0, 7 / 8, 15 / 8, 23 / 8])
    assert video_length(path) == (FRAMES, pytest.approx(RATE))


def test_mp4_sampled_by_fps_with_bound_and_cap(tmp_path):
    path = write_mp4(tmp_path / "clip.mp4")
    clip = load_video(path, fps=2)
    assert clip.indices == [0, 4, 8, 12, 16, 20]
    assert frame_numbers(clip.frames) == clip.indices
    capped = load_video(path, fps=2, max_frames=3)
    assert capped.indices == [0, 8, 20]
    bounded = load_video(path, frames=3, bound=(1.0, 2.0))  # frames 8..16
    assert frame_numbers(bounded.frames) == [8, 12, 16]


def test_mp4_more_frames_than_the_video_repeats_frames(tmp_path):
    path = write_mp4(tmp_path / "short.mp4", frames=3)
    clip = load_video(path, frames=5)
    assert frame_numbers(clip.frames) == [0, 0, 1, 1, 2]


def test_missing_and_corrupt_files_are_named(tmp_path):
    pytest.importorskip("av")
    with pytest.raises(DataError, match=r"nothere\.mp4: video not found"):
        load_video(tmp_path / "nothere.mp4", frames=4)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video" * 50)
    with pytest.raises(DataError, match=r"broken\.mp4: not a readable video file"):
        load_video(bad, frames=4)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(write_mp4(tmp_path / "full.mp4").read_bytes()[:600])
    with pytest.raises(DataError, match=r"truncated\.mp4"):
        load_video(truncated, frames=4)


def test_frame_count_and_fps_are_exclusive(tmp_path):
    path = write_mp4(tmp_path / "clip.mp4")
    with pytest.raises(ConfigError, match="exactly one of frames"):
        load_video(path, frames=4, fps=2)
    with pytest.raises(ConfigError, match="exactly one of frames"):
        load_video(path)


def write_folder(folder: Path, count: int, pattern: str = "frame_{}.png") -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for k in range(count):
        Image.new("RGB", (8, 6), (STEP * k,) * 3).save(folder / pattern.format(k))
    (folder / "notes.txt").write_text("not a frame")
    return folder


def test_frame_folder_in_natural_order(tmp_path):
    folder = write_folder(tmp_path / "frames", 12)  # frame_10.png sorts after frame_9.png
    assert [p.name for p in frame_files(folder)][8:11] == ["frame_8.png", "frame_9.png", "frame_10.png"]
    clip = load_video(folder, frames=4)
    assert clip.frames.shape == (4, 6, 8, 3)
    assert clip.indices == [0, 3, 7, 11]
    assert frame_numbers(clip.frames) == [0, 3, 7, 11]  # PNG is lossless: exact grey levels
    assert clip.timestamps is None and clip.total == 12
    timed = load_video(folder, fps=1, folder_fps=3)
    assert timed.indices == [0, 3, 6, 9]
    assert timed.timestamps == [0.0, 1.0, 2.0, 3.0]


def test_frame_folder_errors_name_the_folder_or_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"empty: no frame images"):
        load_video(empty, frames=2)
    folder = write_folder(tmp_path / "frames", 4)
    with pytest.raises(ConfigError, match="no known frame rate"):
        load_video(folder, fps=1)
    (folder / "frame_1.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"frame_1\.png: cannot read"):
        load_video(folder, frames=4)
