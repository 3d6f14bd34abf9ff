"""MovingShapes generator: the ground truth it writes is what the clips really show."""

from __future__ import annotations

import json
import re

import cv2
import decord
import numpy as np
import pandas as pd
import pytest

from preprocessing.synthetic import cli, moving_shapes
from preprocessing.synthetic.moving_shapes import (
    DIRECTIONS,
    HELD_OUT_COLORS,
    HELD_OUT_SHAPES,
    TRAIN_COLORS,
    TRAIN_SHAPES,
    SceneSpec,
    describe_scene,
    fits_every_direction,
    generate_corpus,
    object_bbox,
    object_mask,
    reachable_region,
    render_frames,
    sample_scene,
    with_motion,
)

SIZE, FRAMES = (64, 64), 16
SPEEDS = (0.5, 2.0)

# An extractor written independently of the generator: the first direction word in the caption.
_DIRECTION_WORDS = {"left": "left", "leftward": "left", "right": "right", "rightward": "right", "up": "up",
                    "upward": "up", "upwards": "up", "top": "up", "down": "down", "downward": "down",
                    "downwards": "down", "bottom": "down", "leftwards": "left", "rightwards": "right"}
_DIRECTION_RE = re.compile(r"\b(" + "|".join(_DIRECTION_WORDS) + r")\b")


def direction_in(caption: str) -> str | None:
    match = _DIRECTION_RE.search(caption.lower())
    return _DIRECTION_WORDS[match.group(1)] if match else None


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    manifest = generate_corpus(out, 6, seed=3, height=SIZE[0], width=SIZE[1], num_frames=FRAMES, fps=8,
                               speed_range=SPEEDS, progress=False)
    return out, pd.read_csv(manifest, keep_default_na=False)


def test_manifest_has_the_columns_preprocessing_and_evaluation_read(corpus):
    out, df = corpus
    assert {"video", "caption", "id", "direction", "speed", "shape", "color", "bbox", "scene"} <= set(df.columns)
    assert df["id"].is_unique and len(df) == 6
    for row in df.itertuples():
        assert (out / row.video).is_file()
        assert row.direction in DIRECTIONS and SPEEDS[0] <= row.speed <= SPEEDS[1]
        spec = SceneSpec.from_json(row.scene)
        target = spec.objects[spec.target]
        assert (target.shape, target.color_name, target.direction) == (row.shape, row.color, row.direction)
        x0, y0, x1, y1 = json.loads(row.bbox)
        assert x0 <= target.x <= x1 and y0 <= target.y <= y1


def test_mp4_decodes_with_decord_at_the_right_size_and_length(corpus):
    out, df = corpus
    for row in df.itertuples():
        reader = decord.VideoReader(str(out / row.video))
        assert len(reader) == FRAMES
        assert reader[0].shape == (*SIZE, 3)
        assert reader.get_avg_fps() == pytest.approx(8.0)
        decoded = reader.get_batch(list(range(FRAMES))).asnumpy()
        rendered = render_frames(SceneSpec.from_json(row.scene), FRAMES)
        # H.264 at crf 18: close to the exact render (the scene JSON re-renders the clip).
        assert np.abs(decoded.astype(float) - rendered).mean() < 4.0


def _colour_centroid(frame: np.ndarray, rgb, window: np.ndarray) -> np.ndarray:
    close = (np.linalg.norm(frame.astype(float) - np.asarray(rgb, float), axis=-1) < 60) & window
    ys, xs = np.nonzero(close)
    return np.array([xs.mean(), ys.mean()])


def test_decoded_object_moves_speed_times_t_in_its_direction(corpus):
    out, df = corpus
    for row in df.itertuples():
        spec = SceneSpec.from_json(row.scene)
        frames = decord.VideoReader(str(out / row.video)).get_batch(list(range(FRAMES))).asnumpy()
        window = cv2.dilate(reachable_region(spec, 0, FRAMES).astype(np.uint8), np.ones((5, 5))) > 0
        target = spec.objects[0]
        step = np.asarray(DIRECTIONS[row.direction], float) * row.speed
        # Velocity of the colour centroid (least-squares over all frames, which averages out the
        # thresholding noise of a small shaded object): exact renders and decoded H.264.
        for video, tolerance in ((render_frames(spec, FRAMES), 0.03), (frames, 0.06)):
            track = np.stack([_colour_centroid(f, target.rgb, window) for f in video])
            velocity = np.polyfit(np.arange(FRAMES), track, 1)[0]
            assert np.linalg.norm(velocity - step) < tolerance * row.speed + 0.02, (row.id, velocity, step)
        # Independent check with dense optical flow (at 4x, where Farneback resolves small
        # objects): the mean flow over the object's path points in the caption's direction.
        grey = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), None, fx=4, fy=4) for f in frames[4:8]]
        flows = [cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 4, 15, 3, 5, 1.2, 0) for a, b in zip(grey, grey[1:])]
        path = cv2.resize(reachable_region(spec, 0, FRAMES).astype(np.uint8), None, fx=4, fy=4) > 0
        mean = np.mean([f[path].mean(axis=0) for f in flows], axis=0)
        assert mean @ step / (np.linalg.norm(mean) * np.linalg.norm(step)) > 0.9, (row.id, mean, step)


def test_still_objects_do_not_move_and_stay_clear_of_the_moving_path(corpus):
    _, df = corpus
    for row in df.itertuples():
        spec = SceneSpec.from_json(row.scene)
        assert len(spec.objects) >= 2
        path = reachable_region(spec, 0, FRAMES)
        for index in range(1, len(spec.objects)):
            assert not spec.objects[index].moving
            assert np.array_equal(object_mask(spec, index, 0), object_mask(spec, index, FRAMES - 1))
            assert not (object_mask(spec, index) & path).any()
        # Fully in view for the whole clip: nothing touches the border.
        for t in (0, FRAMES - 1):
            mask = object_mask(spec, 0, t)
            assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def test_same_seed_same_corpus_and_prefix_stable(tmp_path, corpus):
    out, df = corpus
    again = pd.read_csv(generate_corpus(tmp_path / "a", 3, seed=3, height=SIZE[0], width=SIZE[1],
                                        num_frames=FRAMES, fps=8, speed_range=SPEEDS, progress=False),
                        keep_default_na=False)
    pd.testing.assert_frame_equal(again, df.iloc[:3])
    assert (tmp_path / "a" / again.video[2]).read_bytes() == (out / df.video[2]).read_bytes()
    other = pd.read_csv(generate_corpus(tmp_path / "b", 3, seed=4, height=SIZE[0], width=SIZE[1],
                                        num_frames=FRAMES, fps=8, speed_range=SPEEDS, progress=False))
    assert not other["scene"].equals(again["scene"])


def test_mp4_bytes_are_deterministic(tmp_path):
    kwargs = dict(num_videos=2, seed=1, height=32, width=32, num_frames=8, speed_range=(0.5, 1.0), progress=False)
    generate_corpus(tmp_path / "a", **kwargs)
    generate_corpus(tmp_path / "b", **kwargs)
    for name in ("shapes_train_s1_000000.mp4", "shapes_train_s1_000001.mp4"):
        assert (tmp_path / "a/videos" / name).read_bytes() == (tmp_path / "b/videos" / name).read_bytes()


def test_captions_state_the_direction_and_vary():
    rng = np.random.default_rng(0)
    captions, verbs = [], set()
    for _ in range(300):
        spec = sample_scene(rng, SIZE, FRAMES, SPEEDS)
        caption = describe_scene(spec, rng)
        assert direction_in(caption) == spec.objects[0].direction, caption
        captions.append(caption)
        verbs.update(w for w in caption.lower().split() if w in {"slides", "moves", "drifts", "glides",
                                                                 "travels", "rolls", "floats"})
    assert len(set(captions)) == len(captions)
    assert len(verbs) >= 6


def test_project_extractor_reads_the_direction_from_every_caption():
    # The built-in prompt extractor of fyc-preprocess must recover "<verb> <direction>" from
    # every MovingShapes caption and find no motion in static ones.
    from preprocessing.prompts.builtin import extract_motion

    rng = np.random.default_rng(1)
    for i in range(300):
        spec = sample_scene(rng, SIZE, FRAMES, SPEEDS, static=i % 10 == 0)
        caption = describe_scene(spec, rng)
        prompt = extract_motion(caption)
        direction = spec.objects[0].direction
        if direction is None:
            assert prompt is None, caption
        else:
            assert prompt is not None and prompt.split()[-1] == direction, (prompt, caption)


def test_static_scenes_have_captions_without_motion(tmp_path):
    df = pd.read_csv(generate_corpus(tmp_path, 8, seed=0, height=32, width=32, num_frames=8,
                                     speed_range=(0.5, 1.0), static_fraction=1.0, progress=False),
                     keep_default_na=False)
    for row in df.itertuples():
        assert row.direction == "none" and row.speed == 0 and row.motion_prompt == ""
        assert direction_in(row.caption) is None, row.caption
        assert not any(v in row.caption for v in ("slides", "moves", "drifts", "glides", "travels"))
        spec = SceneSpec.from_json(row.scene)
        frames = render_frames(spec, 8)
        assert np.array_equal(frames[0], frames[-1])


def test_held_out_split_uses_disjoint_colours_and_shapes(tmp_path):
    assert not set(TRAIN_COLORS) & set(HELD_OUT_COLORS)
    assert not set(TRAIN_SHAPES) & set(HELD_OUT_SHAPES)
    rng = np.random.default_rng(1)
    for held_out, colors, shapes in ((False, TRAIN_COLORS, TRAIN_SHAPES), (True, HELD_OUT_COLORS, HELD_OUT_SHAPES)):
        for _ in range(50):
            spec = sample_scene(rng, SIZE, FRAMES, SPEEDS, held_out=held_out)
            for obj in spec.objects:
                assert obj.color_name in colors and obj.shape in shapes
    df = pd.read_csv(generate_corpus(tmp_path, 4, seed=3, height=32, width=32, num_frames=8,
                                     speed_range=(0.5, 1.0), held_out=True, progress=False))
    assert set(df["split"]) == {"held_out"} and set(df["shape"]) <= set(HELD_OUT_SHAPES)


def test_scene_json_round_trip_re_renders_identically():
    spec = sample_scene(np.random.default_rng(5), SIZE, FRAMES, SPEEDS)
    again = SceneSpec.from_json(spec.to_json())
    assert again == spec
    assert np.array_equal(render_frames(again, 4, stride=2), render_frames(spec, 4, stride=2))


def test_cli_writes_a_corpus_and_rejects_impossible_settings(tmp_path, capsys):
    cli.main(["--out", str(tmp_path), "--num-videos", "2", "--size", "32", "32", "--frames", "8",
              "--speed-range", "0.5", "1.0", "--held-out"])
    df = pd.read_csv(tmp_path / "manifest.csv")
    assert len(df) == 2 and (tmp_path / df.video[0]).is_file()
    with pytest.raises(SystemExit, match="speed_range max 3.0"):
        cli.main(["--out", str(tmp_path / "x"), "--size", "32", "32", "--frames", "32"])


MP_KW = dict(seed=2, height=64, width=64, num_frames=8, fps=8, speed_range=(0.5, 2.0), progress=False)


def _centre(spec: SceneSpec, t: int) -> np.ndarray:
    x0, y0, x1, y1 = object_bbox(spec, spec.target, t)
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2])


def test_motions_per_scene_groups_share_frame_0_and_move_in_distinct_directions(tmp_path):
    df = pd.read_csv(generate_corpus(tmp_path, 8, motions_per_scene=4, **MP_KW), keep_default_na=False)
    assert list(df["id"]) == [f"shapes_train_s2_{i:06d}" for i in range(8)]
    assert json.loads((tmp_path / "corpus.json").read_text())["motions_per_scene"] == 4
    first_frames = []
    for g in range(2):
        group = df.iloc[4 * g:4 * g + 4]
        assert sorted(group["direction"]) == sorted(DIRECTIONS)  # 4 distinct directions
        assert group["bbox"].nunique() == 1 and group["caption"].is_unique
        frames0 = [render_frames(SceneSpec.from_json(row.scene), 1)[0] for row in group.itertuples()]
        assert all(np.array_equal(frames0[0], f) for f in frames0[1:])
        first_frames.append(frames0[0])
        for row in group.itertuples():
            spec = SceneSpec.from_json(row.scene)
            target = spec.objects[spec.target]
            assert (target.direction, target.speed) == (row.direction, pytest.approx(row.speed, abs=1e-6))
            assert MP_KW["speed_range"][0] <= row.speed <= MP_KW["speed_range"][1]
            assert direction_in(row.caption) == row.direction, row.caption
            shift = _centre(spec, 7) - _centre(spec, 0)
            expected = np.asarray(DIRECTIONS[row.direction], float) * row.speed * 7
            assert np.abs(shift - expected).max() < 1.5, (row.id, shift, expected)
            # In view and clear of the still objects for the whole clip.
            mask = object_mask(spec, spec.target, 7)
            assert mask.any() and not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
            for k in range(len(spec.objects)):
                if k != spec.target:
                    assert not (object_mask(spec, k) & reachable_region(spec, spec.target, 8)).any()
        # The decoded clip starts at the shared frame 0.
        decoded = decord.VideoReader(str(tmp_path / group.video.iloc[0]))[0].asnumpy()
        assert np.abs(decoded.astype(float) - frames0[0]).mean() < 4.0
    assert not np.array_equal(first_frames[0], first_frames[1])  # groups are different scenes


def test_motions_per_scene_1_is_the_default_corpus_and_partial_groups_are_prefix_stable(tmp_path):
    default = pd.read_csv(generate_corpus(tmp_path / "a", 3, **MP_KW))
    explicit = pd.read_csv(generate_corpus(tmp_path / "b", 3, motions_per_scene=1, **MP_KW))
    pd.testing.assert_frame_equal(default, explicit)
    name = default.video[1]
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    full = pd.read_csv(generate_corpus(tmp_path / "c", 6, motions_per_scene=3, **MP_KW))
    part = pd.read_csv(generate_corpus(tmp_path / "d", 4, motions_per_scene=3, **MP_KW))
    pd.testing.assert_frame_equal(part, full.iloc[:4])
    assert full["direction"].iloc[:3].is_unique and full["direction"].iloc[3:].is_unique


def test_motions_per_scene_rejects_bad_values(tmp_path, capsys, monkeypatch):
    for bad in (0, 5, 2.0):
        with pytest.raises(ValueError, match="motions_per_scene"):
            generate_corpus(tmp_path, 1, motions_per_scene=bad, **MP_KW)
    with pytest.raises(ValueError, match="static_fraction"):
        generate_corpus(tmp_path, 1, motions_per_scene=2, static_fraction=0.5, **MP_KW)
    # 4 px/frame fits one direction in 64 px over 8 frames but never all four (2 * 28 px + object).
    monkeypatch.setattr(moving_shapes, "MAX_SCENE_TRIES", 50)
    with pytest.raises(ValueError, match="motions_per_scene=4.*lower the max of speed_range"):
        generate_corpus(tmp_path, 1, motions_per_scene=4, **{**MP_KW, "speed_range": (4.0, 4.5)})
    with pytest.raises(SystemExit):
        cli.main(["--out", str(tmp_path / "x"), "--motions-per-scene", "5"])
    assert "--motions-per-scene" in capsys.readouterr().err


def test_fits_every_direction_matches_the_rendered_motion():
    rng = np.random.default_rng(4)
    checked = 0
    for _ in range(200):
        spec = sample_scene(rng, SIZE, 8, (0.5, 2.0))
        if not fits_every_direction(spec, 8, 2.0):
            continue
        checked += 1
        for direction in DIRECTIONS:
            moved = with_motion(spec, spec.target, direction, 2.0)
            mask = object_mask(moved, moved.target, 7)
            assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
            for k in range(1, len(spec.objects)):
                assert not (object_mask(moved, k) & reachable_region(moved, moved.target, 8)).any()
    assert checked >= 5
    centred = sample_scene(np.random.default_rng(0), SIZE, 8, (0.5, 2.0))
    assert not fits_every_direction(centred, 8, 30.0)  # 210 px of travel cannot fit 64 px
