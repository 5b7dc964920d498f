"""Qwen video inputs without torchvision: the image processor's patches for still clips, the model accepts them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmaccel.models.tiny import tiny_qwen2_vl
from mmaccel.models.video_inputs import qwen_video_inputs
from tests.tiny_processors import qwen_image_processor


def _frames(count: int, size: tuple[int, int] = (112, 112), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, *size, 3), dtype=np.uint8)


def test_a_still_clip_gives_the_image_processors_patches():
    processor = qwen_image_processor()
    frame = _frames(1)[0]
    image = processor(images=[frame], return_tensors="pt")
    video = qwen_video_inputs([np.stack([frame, frame])], processor)
    assert video["video_grid_thw"].tolist() == image["image_grid_thw"].tolist() == [[1, 8, 8]]
    torch.testing.assert_close(video["pixel_values_videos"], image["pixel_values"], atol=1e-5, rtol=1e-5)


def test_frames_group_by_the_temporal_patch_and_an_odd_last_frame_repeats():
    processor = qwen_image_processor()
    frames = _frames(5)
    out = qwen_video_inputs([frames], processor)
    assert out["video_grid_thw"].tolist() == [[3, 8, 8]]
    assert out["pixel_values_videos"].shape == (3 * 64, 3 * 2 * 14 * 14)
    padded = qwen_video_inputs([np.concatenate([frames, frames[-1:]])], processor)
    assert torch.equal(out["pixel_values_videos"], padded["pixel_values_videos"])
    # the first temporal group differs from a still clip of frame 0 only in its second frame's half
    still = qwen_video_inputs([np.stack([frames[0], frames[0]])], processor)["pixel_values_videos"]
    first = out["pixel_values_videos"][:64].view(64, 3, 2, 14, 14)
    torch.testing.assert_close(first[:, :, 0], still.view(64, 3, 2, 14, 14)[:, :, 0])


def test_frames_resize_to_the_processors_grid_and_videos_concatenate():
    processor = qwen_image_processor()
    out = qwen_video_inputs([_frames(2, (100, 150)), _frames(4, seed=1)], processor)
    grids = out["video_grid_thw"].tolist()
    assert grids[1] == [2, 8, 8] and grids[0][0] == 1 and grids[0][1] % 2 == grids[0][2] % 2 == 0
    assert out["pixel_values_videos"].shape[0] == sum(t * h * w for t, h, w in grids)


def test_the_model_runs_on_the_video_inputs():
    model = tiny_qwen2_vl(layers=2)
    video = qwen_video_inputs([_frames(4)], qwen_image_processor())
    n_tokens = int(video["video_grid_thw"].prod()) // 4
    ids = torch.tensor([[1, 5, 102, *[101] * n_tokens, 103, 7]])
    inputs = {"input_ids": ids, "mm_token_type_ids": (ids == 101).int() * 2, **video}
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == ids.shape and torch.isfinite(logits).all()


def test_bad_frames_are_refused():
    with pytest.raises(ValueError, match="video 0: expected uint8 frames"):
        qwen_video_inputs([np.zeros((2, 112, 112), dtype=np.uint8)], qwen_image_processor())
