"""MovingShapes metrics: perfect videos score perfectly, and each kind of bad video is caught."""

from __future__ import annotations

import math

import decord
import numpy as np
import pandas as pd
import pytest

from fyc_train.eval.moving_shapes import ShapeEvalResult, evaluate_video, summarize
from preprocessing.synthetic.moving_shapes import (
    DIRECTIONS,
    SceneSpec,
    generate_corpus,
    render_frames,
    sample_scene,
    with_motion,
)

SIZE, FRAMES, STRIDE = (64, 64), 8, 2
NATIVE = (FRAMES - 1) * STRIDE + 1
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


@pytest.fixture(scope="module")
def scenes() -> list[SceneSpec]:
    rng = np.random.default_rng(7)
    return [sample_scene(rng, SIZE, NATIVE, (0.4, 1.4), held_out=True) for _ in range(8)]


@pytest.fixture(scope="module")
def perfect(scenes):
    results = []
    for spec in scenes:
        video = render_frames(spec, FRAMES, STRIDE)
        results.append(evaluate_video(video, spec, stride=STRIDE, image=video[0]))
    return results


def test_perfect_videos_score_perfectly(perfect):
    for r in perfect:
        assert r.direction_correct, r
        assert r.locality > 0.9, r
        assert r.speed_rel_error < 0.15, r
        assert r.i1_mse == 0.0
    summary = summarize(perfect)
    assert summary["direction_accuracy"] == 1.0
    assert summary["locality"] > 0.95
    assert summary["speed_within_30pct"] == 1.0
    assert summary["speed_spearman"] > 0.9
    assert summary["i1_mse"] == 0.0 and summary["fraction_still"] == 0.0


def test_decoded_h264_clips_score_like_renders(tmp_path):
    # The generator's own mp4s, decoded and subsampled like preprocessing does: codec noise in
    # the static background must not count as motion outside the object.
    df = pd.read_csv(generate_corpus(tmp_path, 4, seed=2, height=SIZE[0], width=SIZE[1], num_frames=NATIVE,
                                     speed_range=(0.4, 1.4), held_out=True, progress=False))
    for row in df.itertuples():
        video = decord.VideoReader(str(tmp_path / row.video)).get_batch(list(range(0, NATIVE, STRIDE))).asnumpy()
        spec = SceneSpec.from_json(row.scene)
        r = evaluate_video(video, spec, stride=STRIDE)
        assert r.direction_correct and r.locality > 0.9 and r.speed_rel_error < 0.15, r


def test_magnitude_control_is_measured_within_a_scene(scenes):
    spec = scenes[0]
    direction = spec.objects[0].direction
    speeds = [0.3, 0.6, 0.9, 1.2]  # px per native frame: travel fits the frame at every speed
    results = [evaluate_video(render_frames(with_motion(spec, 0, direction, s), FRAMES, STRIDE),
                              with_motion(spec, 0, direction, s), stride=STRIDE, group="scene0") for s in speeds]
    measured = [r.speed_measured for r in results]
    assert measured == sorted(measured)
    for s, m in zip(speeds, measured):
        assert m == pytest.approx(s * STRIDE, rel=0.15)
    assert summarize(results)["speed_spearman_within_scene"] == 1.0


def test_still_video_has_no_direction_and_no_speed(scenes):
    results = []
    for spec in scenes[:4]:
        first = render_frames(spec, 1)
        video = np.repeat(first, FRAMES, axis=0)
        r = evaluate_video(video, spec, stride=STRIDE, image=first[0])
        assert r.direction_measured == "none" and not r.direction_correct
        assert r.speed_measured < 0.05 and r.speed_rel_error > 0.9
        assert math.isnan(r.locality)
        results.append(r)
    summary = summarize(results)
    assert summary["direction_accuracy"] == 0.0 and summary["speed_within_30pct"] == 0.0
    assert summary["fraction_still"] == 1.0 and math.isnan(summary["locality"])


def test_motion_in_the_wrong_direction_is_caught(scenes):
    for spec in scenes[:4]:
        obj = spec.objects[0]
        opposite = with_motion(spec, 0, OPPOSITE[obj.direction], obj.speed)
        r = evaluate_video(render_frames(opposite, FRAMES, STRIDE), spec, stride=STRIDE)
        assert r.direction_measured == OPPOSITE[obj.direction] and not r.direction_correct


def test_wrong_speed_is_caught(scenes):
    for spec in scenes[:4]:
        obj = spec.objects[0]
        slow = with_motion(spec, 0, obj.direction, obj.speed / 2)
        r = evaluate_video(render_frames(slow, FRAMES, STRIDE), spec, stride=STRIDE)
        assert r.direction_correct and r.speed_rel_error == pytest.approx(0.5, abs=0.1)


def test_motion_outside_the_object_lowers_locality(scenes):
    spec = scenes[1]
    obj = spec.objects[0]
    # 1. A camera pan: the whole picture moves (object included), 1 px per frame.
    video = render_frames(spec, FRAMES, STRIDE)
    dx, dy = DIRECTIONS[obj.direction]
    panned = np.stack([np.roll(f, (t * dy, t * dx), axis=(0, 1)) for t, f in enumerate(video)])
    assert evaluate_video(panned, spec, stride=STRIDE).locality < 0.6
    # 2. The clicked object stays still and a distractor moves instead.
    wrong_object = with_motion(with_motion(spec, 0, None, 0.0), 1, "up", 1.0)
    r = evaluate_video(render_frames(wrong_object, FRAMES, STRIDE), spec, stride=STRIDE)
    assert r.locality < 0.2 and r.speed_measured < 0.1


def test_noisy_first_frame_has_high_mse(scenes):
    spec = scenes[2]
    video = render_frames(spec, FRAMES, STRIDE)
    image = video[0].copy()
    noisy = video.copy()
    noisy[0] = np.clip(video[0] + np.random.default_rng(0).normal(0, 20, video[0].shape), 0, 255).astype(np.uint8)
    r = evaluate_video(noisy, spec, stride=STRIDE, image=image)
    assert r.i1_mse > 300  # sigma 20 noise: ~400 before clipping, far above the goal of 25
    assert evaluate_video(video, spec, stride=STRIDE, image=image).i1_mse == 0.0


def test_summarize_counts_and_ranks():
    def result(requested: float, measured: float, correct: bool, group: str = "") -> ShapeEvalResult:
        return ShapeEvalResult("left", "left" if correct else "up", correct, 0.5, requested, measured,
                               abs(measured - requested) / requested, 10.0, group)

    results = [result(1, 1.1, True, "a"), result(2, 1.5, True, "a"), result(3, 3.5, False, "a"),
               result(4, 2.0, True, "b")]
    summary = summarize(results)
    assert summary["direction_accuracy"] == 0.75
    assert summary["speed_within_30pct"] == 0.75  # 1.1/1, 1.5/2, 3.5/3 within 30%; 2.0/4 not
    assert summary["speed_spearman"] == pytest.approx(0.8)  # measured ranks 1, 2, 4, 3
    assert summary["speed_spearman_within_scene"] == 1.0  # group b has a single speed: not ranked
    with pytest.raises(ValueError, match="no results"):
        summarize([])


def test_scene_and_video_must_agree(scenes):
    spec = scenes[0]
    video = render_frames(spec, FRAMES, STRIDE)
    with pytest.raises(ValueError, match="render the evaluation scene at the video's resolution"):
        evaluate_video(video[:, :32, :32], spec)
    with pytest.raises(ValueError, match="no requested motion"):
        evaluate_video(video, with_motion(spec, 0, None, 0.0))
