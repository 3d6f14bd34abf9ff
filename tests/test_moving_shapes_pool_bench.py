"""bench/moving_shapes_pool.py: the README's 16-scene numbers pool two evaluations' rows."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import moving_shapes_pool  # noqa: E402


def write_eval(folder: Path, speeds_measured: list[float], correct: list[bool]) -> Path:
    rows = [{"mode": "model_first_frame", "scene": "scene000", "magnitude": 1.0 + i, "direction_requested": "left",
             "direction_measured": "left" if ok else "up", "direction_correct": ok, "locality": 0.5 + 0.1 * i,
             "speed_requested": 1.0 + i, "speed_measured": measured, "speed_rel_error": abs(measured - 1 - i) / (1 + i),
             "i1_mse": None if i == 0 else 2.0, "group": "scene000/left"}
            for i, (measured, ok) in enumerate(zip(speeds_measured, correct))]
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"summary": {}, "rows": rows}))
    return folder


def test_pooling_summarizes_every_row_and_keeps_same_named_scenes_apart(tmp_path, capsys):
    a = write_eval(tmp_path / "seed0", [1.0, 2.0, 3.0], [True, True, False])
    b = write_eval(tmp_path / "seed1", [3.0, 2.0, 1.0], [True, False, False])
    pooled = moving_shapes_pool.main([str(a), str(b)])["model_first_frame"]
    assert pooled["num_videos"] == 6
    assert pooled["direction_accuracy"] == pytest.approx(3 / 6)
    assert pooled["locality"] == pytest.approx((0.5 + 0.6 + 0.7) / 3)
    assert pooled["i1_mse"] == pytest.approx(2.0)  # a missing (null) I1-MSE is not a zero
    # "scene000/left" of each seed is its own group: +1 and -1, not one group of six
    assert pooled["speed_spearman_within_scene"] == pytest.approx(0.0)
    assert "model_first_frame" in capsys.readouterr().out


def test_a_folder_without_metrics_is_named(tmp_path):
    with pytest.raises(SystemExit, match="nowhere/metrics.json"):
        moving_shapes_pool.main([str(tmp_path / "nowhere")])
