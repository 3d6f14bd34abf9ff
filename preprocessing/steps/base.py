"""The `Step` contract shared by every per-row processing step of `fyc-preprocess`.

A step takes a sample dict and returns it, enriched (see docs/ARCHITECTURE.md for the fields).
A row whose `status` is not "ok" (it failed or was filtered earlier) is passed through untouched,
so one bad input never stops the job and every input row reaches the manifest with its reason.
Each step adds its wall time to `sample["timings"][name]` so the pipeline can report where the
time goes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

Sample = dict[str, Any]


def is_ok(sample: Sample) -> bool:
    """Rows without a status are new rows, hence ok."""
    return sample.get("status", "ok") == "ok"


def mark(sample: Sample, status: str, reason: str) -> Sample:
    """Record a failure ("error") or a filter decision ("filtered") with a reason slug + detail."""
    if status not in ("error", "filtered"):
        raise ValueError(f"status must be 'error' or 'filtered', got {status!r}")
    sample["status"] = status
    sample["reason"] = reason
    return sample


@contextmanager
def timed(sample: Sample, name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings = sample.setdefault("timings", {})
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


class Step:
    """Base class: subclasses implement `process(sample)` for one ok row.

    `process_batch` maps over rows by default; steps that gain from batching (RAFT) override it.
    """

    name: str = "step"

    def process(self, sample: Sample) -> Sample:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, sample: Sample) -> Sample:
        if not is_ok(sample):
            return sample
        sample.setdefault("status", "ok")
        sample.setdefault("reason", "")
        with timed(sample, self.name):
            return self.process(sample)

    def process_batch(self, samples: list[Sample]) -> list[Sample]:
        return [self(sample) for sample in samples]

    def close(self) -> None:
        """Release resources (worker processes, models). Safe to call twice."""
