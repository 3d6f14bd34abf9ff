"""stats.json: counts by status and reason, throughput, wall time, per-step time, config, versions."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from preprocessing.config import to_container


def reason_slug(reason: str) -> str:
    return (reason or "").split(":", 1)[0].strip()


def versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("torch", "torchvision", "ray", "decord2", "decord", "webdataset", "av", "hydra-core", "fyc"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def manifest_counts(out_dir: str | Path) -> dict[str, Any]:
    table = pq.read_table(Path(out_dir) / "manifest.parquet", columns=["status", "reason"]).to_pylist()
    by_status = Counter(r["status"] for r in table)
    by_reason: dict[str, Counter] = {}
    for r in table:
        if r["status"] != "ok" or r["reason"]:
            by_reason.setdefault(r["status"], Counter())[reason_slug(r["reason"])] += 1
    counts = {"rows": len(table), "by_status": dict(by_status),
              "by_reason": {status: dict(c) for status, c in by_reason.items()}}
    counts.update(window_counts(out_dir))
    return counts


def window_counts(out_dir: str | Path) -> dict[str, Any]:
    """Windows by status and reason (windows.parquet), and the ok windows whose label is suspect
    (label_warning: the caption names a motion, the flow measured none)."""
    path = Path(out_dir) / "windows.parquet"
    if not path.exists():
        return {}
    table = pq.read_table(path, columns=["status", "reason", "label_warning"]).to_pylist()
    by_reason: dict[str, Counter] = {}
    for r in table:
        if r["status"] != "ok":
            by_reason.setdefault(r["status"], Counter())[reason_slug(r["reason"])] += 1
    warnings = Counter(reason_slug(r["label_warning"]) for r in table if r["status"] == "ok" and r["label_warning"])
    return {"windows": {"rows": len(table), "by_status": dict(Counter(r["status"] for r in table)),
                        "by_reason": {status: dict(c) for status, c in by_reason.items()}},
            "label_warnings": dict(warnings)}


def write_stats(out_dir: str | Path, cfg: Any, summary: Any) -> Path:
    counts = manifest_counts(out_dir)
    wall = max(summary.wall_s, 1e-9)
    stats = {
        "counts": counts,
        "this_run": {
            "rows_processed": summary.rows_processed,
            "chunks_processed": summary.chunks_processed,
            "wall_s": round(summary.wall_s, 3),
            "clips_per_s": round(summary.rows_processed / wall, 4),
            "step_seconds": {k: round(v, 3) for k, v in sorted(summary.step_seconds.items())},
        },
        "num_chunks": summary.num_chunks,
        "config": to_container(cfg),
        "versions": versions(),
        "cpu_count": os.cpu_count(),
    }
    path = Path(out_dir) / "stats.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stats, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path
