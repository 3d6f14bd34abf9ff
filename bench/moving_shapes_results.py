"""Write results.json + results.md for a scripts/reproduce_moving_shapes.sh run.

Reads OUT/stage_times.tsv (wall seconds per stage) and the fyc-eval-shapes folders under
OUT/eval/ (cfg<guidance>_seed<seed>/, ma_zero/), pools the seeds of each guidance into one
summary (bench/moving_shapes_pool.py: the evaluation's own `summarize` over all rows) and
compares it with the goals of docs/moving_shapes.md.

    python bench/moving_shapes_results.py --out out/ms_repro
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from moving_shapes_pool import KEYS, pooled_summaries  # noqa: E402

sys.path.insert(0, str(REPO))
from fyc_train.eval.run import GOALS  # noqa: E402  {metric: (comparison, threshold)}

MODE = "model_first_frame"
LABELS = {
    "direction_accuracy": "direction",
    "locality": "locality",
    "speed_spearman": "speed Spearman",
    "speed_within_30pct": "speed within 30%",
    "i1_mse": "I1-MSE",
}
TRAINING_STAGES = ("corpus", "preprocess", "stage1", "stage2")


def meets(key: str, value: float) -> bool:
    op, threshold = GOALS[key]
    return value >= threshold if op == ">=" else value < threshold


def stage_times(out: Path) -> dict[str, float]:
    path = out / "stage_times.tsv"
    times: dict[str, float] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            name, seconds = line.split("\t")
            times[name] = times.get(name, 0.0) + float(seconds)
    return times


def guidance_rows(out: Path) -> list[dict]:
    """One pooled row per guidance whose evaluations all exist."""
    by_guidance: dict[str, list[Path]] = {}
    for folder in sorted((out / "eval").glob("cfg*_seed*")):
        match = re.fullmatch(r"cfg([0-9.]+)_seed(\d+)", folder.name)
        if match and (folder / "metrics.json").is_file():
            by_guidance.setdefault(match.group(1), []).append(folder)
    rows = []
    for guidance, folders in sorted(by_guidance.items(), key=lambda kv: -float(kv[0])):
        summary = pooled_summaries(folders)[MODE]
        rows.append({
            "guidance": float(guidance),
            "evaluations": [f.name for f in folders],
            "num_videos": summary["num_videos"],
            **{k: summary[k] for k in KEYS},
            "goals_met": [k for k in KEYS if meets(k, summary[k])],
        })
    return rows


def ablation_row(out: Path) -> dict | None:
    path = out / "eval" / "ma_zero" / "metrics.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())["summary"][MODE]
    return {"ablate": "ma_zero", "num_videos": summary["num_videos"], **{k: summary[k] for k in KEYS}}


def render_md(results: dict) -> str:
    t = results["wall_seconds"]
    lines = ["# MovingShapes reproduction", "",
             f"Machine: {results['machine']}, OMP_NUM_THREADS={results['omp_num_threads']}.", "",
             "| stage | minutes |", "| --- | --- |"]
    lines += [f"| {name} | {seconds / 60:.1f} |" for name, seconds in t.items()]
    lines += [f"| corpus to trained model (corpus, preprocessing, both stages) | {results['training_minutes']:.1f} |",
              f"| **all stages** | **{results['total_minutes']:.1f}** |", ""]
    header = "| guidance | videos | " + " | ".join(LABELS[k] for k in KEYS) + " |"
    lines += [header, "| --- " * (len(KEYS) + 2) + "|",
              "| goal | | >= 0.9 | >= 0.9 | >= 0.9 | >= 0.9 | < 25 |"]
    for row in results["headline"]:
        cells = [f"**{row[k]:.3f}**" if meets(k, row[k]) else f"{row[k]:.3f}" for k in KEYS]
        lines.append(f"| {row['guidance']:g} | {row['num_videos']} | " + " | ".join(cells) + " |")
    if results["ma_zero"]:
        row = results["ma_zero"]
        lines.append(f"| 1 (MA output zeroed) | {row['num_videos']} | "
                     + " | ".join(f"{row[k]:.3f}" for k in KEYS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the reproduction's output folder")
    args = parser.parse_args(argv)
    times = stage_times(args.out)
    results = {
        "command": "scripts/reproduce_moving_shapes.sh --raft-weights raft_small_torchvision.pth",
        "machine": f"{os.cpu_count()}-core CPU ({platform.machine()}), no GPU",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "wall_seconds": times,
        "training_minutes": sum(times.get(s, 0.0) for s in TRAINING_STAGES) / 60,
        "total_minutes": sum(times.values()) / 60,
        "headline": guidance_rows(args.out),
        "ma_zero": ablation_row(args.out),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(render_md(results))
    print(render_md(results))
    return results


if __name__ == "__main__":
    main()
