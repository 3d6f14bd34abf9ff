"""Per-window accounting: windows.parquet (one row per window) and the per-row manifest columns.

An input row becomes one sample per window (steps/windows.py); manifest.parquet keeps one row per
input row and windows.parquet one row per window the row was cut into, each with its own status
(ok / filtered / error) and reason, so every window is accounted for. Rows that never reached
windowing (fetch/decode errors, captions without motion, no shot long enough) have no window
rows: their manifest row holds the reason. In one-window mode (`clip.windows_per_video=1`) a row
that was decoded has exactly one window, keyed like the row.

Like the manifest, the table is written per chunk (`parts/windows-{i:06d}.parquet`, before the
chunk's manifest part, which marks the chunk done) and concatenated at the end of every run.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing.outputs.manifest import manifest_row, write_table_atomic

WINDOW_SCHEMA = pa.schema([
    ("row_index", pa.int64()), ("chunk", pa.int64()), ("id", pa.string()), ("key", pa.string()),
    ("window_index", pa.int64()), ("status", pa.string()), ("reason", pa.string()), ("shard", pa.string()),
    ("shot_index", pa.int64()), ("shot_start", pa.int64()), ("shot_end", pa.int64()),
    ("frame_start", pa.int64()), ("frame_end", pa.int64()),
    ("magnitude", pa.float64()), ("mask_fraction", pa.float64()), ("direction", pa.string()),
    ("motion_prompt", pa.string()), ("label_warning", pa.string()),
])


def windows_part_path(out_dir: str | Path, chunk: int) -> Path:
    return Path(out_dir) / "parts" / f"windows-{chunk:06d}.parquet"


def _has_window(sample: dict[str, Any]) -> bool:
    return "window_index" in sample or sample.get("frame_indices") is not None


def window_row(sample: dict[str, Any], chunk: int, shard: str) -> dict[str, Any]:
    base = manifest_row(sample, chunk, shard)
    shot = sample.get("shot") or [None, None]
    indices = sample.get("frame_indices") or [None]
    return {
        "row_index": base["row_index"], "chunk": chunk, "id": base["id"], "key": base["key"],
        "window_index": int(sample.get("window_index") or 0), "status": base["status"],
        "reason": base["reason"], "shard": base["shard"], "shot_index": sample.get("shot_index"),
        "shot_start": shot[0], "shot_end": shot[1], "frame_start": indices[0], "frame_end": indices[-1],
        "magnitude": base["magnitude"], "mask_fraction": base["mask_fraction"], "direction": base["direction"],
        "motion_prompt": base["motion_prompt"], "label_warning": base["label_warning"],
    }


def _row_of_windows(windows: list[dict[str, Any]], chunk: int, shard: str) -> dict[str, Any]:
    """The manifest row of an input row cut into windows: ok if any window is; else the first
    error's (or the first filter's) reason; labels and warning of its first ok window."""
    ok = [w for w in windows if w.get("status", "ok") == "ok"]
    base = ok[0] if ok else windows[0]
    row = manifest_row(base, chunk, shard)
    row["key"] = base.get("row_key", row["key"])
    if not ok:
        failed = [w for w in windows if w.get("status") == "error"] or windows
        row.update(status=failed[0]["status"], reason=failed[0].get("reason", ""), shard="")
    row["num_windows"], row["windows_ok"] = len(windows), len(ok)
    return row


def account_chunk(samples: list[dict[str, Any]], chunk: int, shard: str) -> tuple[list[dict], list[dict]]:
    """(manifest rows, one per input row; window rows, one per window) of a chunk's samples."""
    by_row: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for s in samples:
        by_row[int(s["row_index"])].append(s)
    rows, windows = [], []
    for row_index in sorted(by_row):
        group = sorted(by_row[row_index], key=lambda s: int(s.get("window_index") or 0))
        windows += [window_row(s, chunk, shard) for s in group if _has_window(s)]
        if len(group) == 1 and "window_index" not in group[0]:
            row = manifest_row(group[0], chunk, shard)
            row["num_windows"] = int(_has_window(group[0]))
            row["windows_ok"] = int(row["num_windows"] == 1 and row["status"] == "ok")
        else:
            row = _row_of_windows(group, chunk, shard)
        rows.append(row)
    return rows, windows


def write_windows_part(rows: list[dict[str, Any]], out_dir: str | Path, chunk: int) -> Path:
    return write_table_atomic(rows, windows_part_path(out_dir, chunk), schema=WINDOW_SCHEMA)


def read_windows_part(out_dir: str | Path, chunk: int) -> list[dict[str, Any]]:
    path = windows_part_path(out_dir, chunk)
    return pq.read_table(path).to_pylist() if path.exists() else []


def write_windows_table(out_dir: str | Path, num_chunks: int) -> Path:
    """Concatenate the window parts of chunks 0..num_chunks-1 into windows.parquet. A chunk
    finished by a version without window parts contributes none (its manifest rows still count)."""
    tables = [pq.read_table(p).cast(WINDOW_SCHEMA) for i in range(num_chunks)
              if (p := windows_part_path(out_dir, i)).exists()]
    table = pa.concat_tables(tables) if tables else WINDOW_SCHEMA.empty_table()
    path = Path(out_dir) / "windows.parquet"
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


class ChunkCollector:
    """Buffers the samples Ray returns until a chunk is whole: every input row of it has arrived
    with all of its windows (`row_samples` per sample, set by the window split)."""

    def __init__(self, rows_per_chunk: dict[int, int]) -> None:
        self.expected = dict(rows_per_chunk)
        self.buffers: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self._arrived: dict[int, dict[int, int]] = defaultdict(dict)
        self._rows_done: dict[int, int] = defaultdict(int)

    def add(self, chunk: int, sample: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Add one sample; returns the chunk's samples when it is complete, else None."""
        self.buffers[chunk].append(sample)
        arrived = self._arrived[chunk]
        row = int(sample["row_index"])
        arrived[row] = arrived.get(row, 0) + 1
        if arrived[row] == int(sample.get("row_samples", 1)):
            self._rows_done[chunk] += 1
        if self._rows_done[chunk] == self.expected[chunk]:
            del self._arrived[chunk], self._rows_done[chunk]
            return self.buffers.pop(chunk)
        return None

    def incomplete(self) -> list[int]:
        return sorted(self.buffers)
