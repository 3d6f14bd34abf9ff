"""fyc-demo's own logic: which flow it picks without downloads, and the summary page it writes."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from fyc_train.cli.demo import find_raft_weights
from fyc_train.cli.demo_summary import write_summary
from conftest import asset


def test_raft_weights_are_found_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("FYC_RAFT_WEIGHTS", raising=False)
    assert find_raft_weights(None) is None  # fresh machine: Farneback fallback, no download

    weights = str(asset("raft/raft_small_torchvision.pth"))
    monkeypatch.setenv("FYC_RAFT_WEIGHTS", weights)
    assert find_raft_weights(None) == weights
    assert find_raft_weights(weights) == weights
    with pytest.raises(SystemExit, match="does not exist"):
        find_raft_weights(str(tmp_path / "missing.pth"))

    monkeypatch.delenv("FYC_RAFT_WEIGHTS")
    from torchvision.models.optical_flow import Raft_Small_Weights

    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    os.symlink(weights, cache / os.path.basename(Raft_Small_Weights.DEFAULT.url))
    assert find_raft_weights(None) == "default"  # torchvision's cache is used as is


def test_summary_page_embeds_curve_metrics_and_sheets(tmp_path):
    run = tmp_path / "runs" / "ms"
    (run / "csv").mkdir(parents=True)
    pd.DataFrame({"step": [1, 2, 3, 3], "train/loss": [1.0, 0.5, 0.25, None],
                  "val/loss": [None, None, None, 0.3]}).to_csv(run / "csv" / "metrics.csv", index=False)
    evals = tmp_path / "eval"
    (evals / "sheets").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (40, 20), (200, 30, 30)).save(evals / "sheets" / "scene000.png")
    (evals / "metrics.json").write_text('{"summary": {"impose=false": {"direction_accuracy": 0.75}}}')

    page = write_summary(tmp_path, run_dir=run, eval_dir=evals, data_dir=tmp_path / "data",
                         timings={"train": 12.0})
    text = Path(page).read_text()
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000
    assert text.count("data:image/png;base64,") == 2  # loss curve + one contact sheet, embedded
    assert "direction_accuracy" in text and "0.750" in text
    assert "12 s" in text and "missing" in text  # data dir was never written: said so
