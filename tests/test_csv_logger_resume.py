"""A run resumed into its own run directory keeps its CSV loss history (conf/train/logger/csv.yaml).

Lightning's CSVLogger deletes metrics.csv when the folder exists; ResumableCSVLogger appends, and
replaces the rows a killed run logged after its last checkpoint."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fyc_train.loggers import ResumableCSVLogger

REPO_CONF = Path(__file__).resolve().parents[1] / "conf" / "train" / "logger" / "csv.yaml"


def log_steps(logger, steps, **metrics) -> None:
    for step in steps:
        logger.log_metrics({name: value * step for name, value in metrics.items()}, step=step)
    logger.save()
    logger.finalize("success")


def test_the_configured_csv_logger_is_the_resumable_one(tmp_path):
    conf = OmegaConf.load(REPO_CONF)
    conf.csv.save_dir = str(tmp_path)
    assert isinstance(instantiate(conf.csv), ResumableCSVLogger)


def test_resume_appends_and_replaces_the_rows_logged_after_the_checkpoint(tmp_path):
    first = ResumableCSVLogger(tmp_path, name="csv", version="")
    log_steps(first, range(0, 100, 10), **{"train/loss": 1.0})  # killed after step 90, last checkpoint at 50

    resumed = ResumableCSVLogger(tmp_path, name="csv", version="")
    log_steps(resumed, range(50, 130, 10), **{"train/loss": 2.0, "val/loss": 3.0})  # a new metric key too

    frame = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert frame["step"].tolist() == list(range(0, 130, 10))  # every step once, in order
    before, after = frame[frame.step < 50], frame[frame.step >= 50]
    assert (before["train/loss"] == before.step * 1.0).all() and before["val/loss"].isna().all()
    assert (after["train/loss"] == after.step * 2.0).all() and (after["val/loss"] == after.step * 3.0).all()


def test_a_fresh_run_writes_a_fresh_file(tmp_path):
    log_steps(ResumableCSVLogger(tmp_path, name="csv", version=""), range(3), **{"train/loss": 1.0})
    frame = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert frame["step"].tolist() == [0, 1, 2] and frame.columns.tolist() == ["step", "train/loss"]
