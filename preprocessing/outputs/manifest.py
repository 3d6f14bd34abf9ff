"""Per-chunk manifest parts and the final manifest.parquet (one row per input row; the
per-window table is outputs/windows.py).

A part is written after its chunk's shard is in place, so "part exists" means "chunk done".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST_SCHEMA = pa.schema([
    ("row_index", pa.int64()), ("chunk", pa.int64()), ("id", pa.string()), ("key", pa.string()),
    ("status", pa.string()), ("reason", pa.string()), ("shard", pa.string()),
    ("motion_prompt", pa.string()), ("magnitude", pa.float64()), ("mask_fraction", pa.float64()),
    ("direction", pa.string()), ("caption", pa.string()), ("video", pa.string()),
    ("prompt_source", pa.string()), ("num_source_frames", pa.int64()), ("fps", pa.float64()),
    ("extra", pa.string()),
    # added with scene-aware windows and label checks: parts written before them lack these
    # columns and read back as nulls (write_manifest)
    ("num_windows", pa.int64()), ("windows_ok", pa.int64()), ("label_warning", pa.string()),
])


def part_path(out_dir: str | Path, chunk: int) -> Path:
    return Path(out_dir) / "parts" / f"part-{chunk:06d}.parquet"


def flow_direction(sample: dict[str, Any], min_pixels: float = 0.05) -> str | None:
    """Dominant direction of the mean flow inside the mask (left/right/up/down), None if still."""
    vectors = sample.get("flow_mean_vectors")
    if vectors is None:
        return None
    mean = np.asarray(vectors, dtype=np.float64).reshape(-1, 2).mean(axis=0)
    if not np.all(np.isfinite(mean)) or np.hypot(*mean) < min_pixels:
        return None
    dx, dy = mean
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def _float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


def manifest_row(sample: dict[str, Any], chunk: int, shard: str) -> dict[str, Any]:
    ok = sample.get("status", "ok") == "ok"
    mask = sample.get("mask")
    fraction = sample.get("mask_fraction")
    if fraction is None and mask is not None:
        fraction = float((np.asarray(mask) > 127).mean())
    frames = sample.get("num_source_frames")
    return {
        "row_index": int(sample["row_index"]), "chunk": chunk, "id": sample["id"], "key": sample["key"],
        "status": sample.get("status", "ok"), "reason": sample.get("reason", ""),
        "shard": shard if ok else "", "motion_prompt": sample.get("motion_prompt") or "",
        "magnitude": _float(sample.get("magnitude")), "mask_fraction": _float(fraction),
        "direction": sample.get("direction") or "", "caption": sample.get("caption", ""),
        "video": sample.get("video", ""), "prompt_source": sample.get("prompt_source", ""),
        "num_source_frames": None if frames is None else int(frames), "fps": _float(sample.get("fps")),
        "extra": json.dumps(sample.get("extra") or {}, sort_keys=True, ensure_ascii=False),
        "label_warning": sample.get("label_warning") or "",
    }


def write_table_atomic(rows: Iterable[dict[str, Any]], path: str | Path, schema: pa.Schema = MANIFEST_SCHEMA) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(list(rows), schema=schema)
    tmp = path.with_name(path.name + ".tmp")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_part(out_dir: str | Path, chunk: int) -> list[dict[str, Any]]:
    return pq.read_table(part_path(out_dir, chunk)).to_pylist()


def write_manifest(out_dir: str | Path, num_chunks: int) -> Path:
    """Concatenate parts 0..num_chunks-1 (in order) into manifest.parquet."""
    tables = [_with_schema(pq.read_table(part_path(out_dir, i))) for i in range(num_chunks)]
    table = pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()
    path = Path(out_dir) / "manifest.parquet"
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    from preprocessing.outputs.windows import write_windows_table

    write_windows_table(out_dir, num_chunks)
    return path


def _with_schema(table: pa.Table) -> pa.Table:
    """A part in MANIFEST_SCHEMA; columns it predates are added as nulls (resumed old outputs)."""
    for name in MANIFEST_SCHEMA.names:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(len(table), MANIFEST_SCHEMA.field(name).type))
    return table.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)
