"""CSV metrics that survive a resume.

Lightning's `CSVLogger` deletes `metrics.csv` when its folder already holds files (it warns
"Previous log files in this directory will be deleted"), so a run resumed into its own run
directory (`ckpt_path=...`, a requeued SLURM job) loses its whole loss history up to the resume.
`ResumableCSVLogger` keeps the file and appends to it. Rows of steps at or after the first step
the resumed run logs are dropped first: a killed run logged them after its last checkpoint, and
the resumed run computes them again. Everything else is Lightning's logger (hparams.yaml, the
header rewrite when new metric keys appear, rank-zero only).
"""
from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class AppendingExperimentWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        self._resumed = self._fs.isfile(self.metrics_file_path)
        if self._resumed:  # the existing header: rows written before the resume keep their columns
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])

    def save(self) -> None:
        if self._resumed and self.metrics:
            self._drop_rows_from(min(int(m["step"]) for m in self.metrics))
            self._resumed = False
        super().save()

    def _drop_rows_from(self, step: int) -> None:
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            rows = [row for row in csv.DictReader(file) if row.get("step") and int(float(row["step"])) < step]
        with self._fs.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)


class ResumableCSVLogger(CSVLogger):
    """`lightning.pytorch.loggers.CSVLogger` that appends to an existing `metrics.csv`."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
