"""Pool several `fyc-eval-shapes` evaluations of one checkpoint into one summary.

Scene sets differ by more than the goals' margins (docs/moving_shapes.md), so the README's
numbers pool 16 scenes: two 8-scene evaluations at different seeds. Pooling re-summarizes the
per-video rows with the evaluation's own `summarize` (Spearman over all videos, the rest averaged);
scenes keep the evaluation they came from, so seed 0's scene000 and seed 1's are different groups.

    python bench/moving_shapes_pool.py out/ms_repro/eval/cfg1.25_seed0 out/ms_repro/eval/cfg1.25_seed1
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fyc_train.eval.moving_shapes import ShapeEvalResult, summarize  # noqa: E402

KEYS = ("direction_accuracy", "locality", "speed_spearman", "speed_within_30pct", "i1_mse")


def pooled_summaries(eval_dirs: list[Path]) -> dict[str, dict]:
    """{mode: summarize(rows of that mode from every evaluation)}."""
    names = {f.name for f in fields(ShapeEvalResult)}
    by_mode: dict[str, list[ShapeEvalResult]] = {}
    for index, folder in enumerate(eval_dirs):
        path = folder / "metrics.json"
        if not path.is_file():
            raise SystemExit(f"{path}: no such file (pass folders written by fyc-eval-shapes out=...)")
        for row in json.loads(path.read_text())["rows"]:
            values = {k: (float("nan") if v is None else v) for k, v in row.items() if k in names}
            values["group"] = f"{index}:{row.get('group', '')}"
            by_mode.setdefault(row["mode"], []).append(ShapeEvalResult(**values))
    return {mode: summarize(results) for mode, results in by_mode.items()}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dirs", nargs="+", type=Path, help="fyc-eval-shapes out= folders")
    args = parser.parse_args(argv)
    summaries = pooled_summaries(args.eval_dirs)
    print(f"{'mode':20s} {'videos':>6s} " + " ".join(f"{k:>18s}" for k in KEYS))
    for mode, s in summaries.items():
        print(f"{mode:20s} {s['num_videos']:6d} " + " ".join(f"{s[k]:18.4f}" for k in KEYS))
    return summaries


if __name__ == "__main__":
    main()
