"""bench/moving_shapes_locality.py: where the motion energy of a video goes (locality's budget)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fyc_train.eval.run import held_out_scenes
from preprocessing.synthetic.moving_shapes import render_frames, with_motion

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import moving_shapes_locality  # noqa: E402


@pytest.fixture(scope="module")
def request_and_truth():
    spec = held_out_scenes(1, 0, (64, 64), 8, 2.0)[0]
    request = with_motion(spec, spec.target, "right", 1.5)
    return request, render_frames(request, 8)


def test_a_perfect_render_keeps_its_energy_inside_and_its_background_still(request_and_truth):
    request, truth = request_and_truth
    split = moving_shapes_locality.energy_split(truth, request)
    assert split["locality"] > 0.97
    assert max(split["background_drift"]) == 0.0
    assert split["outside_rms_flow"] < split["outside_rms_flow_for_target"]


def test_background_flicker_is_reported_as_drift_and_lowers_locality(request_and_truth):
    request, truth = request_and_truth
    rng = np.random.default_rng(0)
    flicker = truth.astype(np.int16)
    flicker[1:] += rng.integers(-6, 7, size=flicker[1:].shape, dtype=np.int16)  # ~3 grey levels, frames 1..
    flicker = flicker.clip(0, 255).astype(np.uint8)
    split = moving_shapes_locality.energy_split(flicker, request)
    clean = moving_shapes_locality.energy_split(truth, request)
    assert split["background_drift"][0] == 0.0
    assert all(2.5 < d < 3.7 for d in split["background_drift"][1:]), split["background_drift"]
    assert split["locality"] < clean["locality"] - 0.1
    assert split["outside_rms_flow"] > 5 * clean["outside_rms_flow"]


def test_ground_truth_report(tmp_path, capsys):
    report = moving_shapes_locality.main(["--num-scenes", "1", "--magnitudes", "3.0", "--out",
                                          str(tmp_path / "truth.json")])
    assert list(report) == ["truth"] and report["truth"]["videos"] == 4  # one scene x 4 directions
    assert report["truth"]["locality"] > 0.95  # H.264 keeps the background still (measured 0.99)
    assert capsys.readouterr().out.splitlines()[1].startswith("truth")
    assert (tmp_path / "truth.json").exists()
