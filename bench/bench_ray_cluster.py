"""Overhead of a second Ray node: the same `fyc-preprocess` job, submitted with jobs/ray_submit.sh,
on a one-node cluster (head with 2 CPUs) and on a two-node cluster (head + one worker raylet,
1 CPU each) started side by side on this machine. Same CPUs in all, same corpus, same config:
the difference is what crosses between raylets (blocks copied object store to object store,
actors scheduled on two nodes). Runs alternate between the clusters; prints the median times
and the ratio two-node / one-node, all from this one run. Both clusters are stopped at the end.

    .venv/bin/python bench/bench_ray_cluster.py                       # 16 synthetic clips, 2 rounds
    .venv/bin/python bench/bench_ray_cluster.py --clips-dir DIR --rounds 3

Times: `job` = submit to finish as the submitter sees it; `pipeline` = the driver's own wall
time from stats.json (Ray connect, weights check, Ray Data execution, outputs).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from ray_local_cluster import LocalRayCluster  # noqa: E402

JOB = ["clip.num_frames=8", "clip.stride=2", "clip.size=[128,128]", "flow.size=128", "flow.num_updates=6",
       "shard.max_samples=4", "report_thumbnails=2"]


def make_corpus(root: Path, clips_dir: Path | None, num_videos: int) -> Path:
    if clips_dir is None:
        from preprocessing.synthetic.moving_shapes import generate_corpus

        return generate_corpus(root / "corpus", num_videos, seed=11, height=128, width=128, num_frames=24,
                               progress=False)
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:  # captions must name a motion or the row is filtered
        writer = csv.writer(f)
        writer.writerow(["video", "caption"])
        for clip in sorted(p for p in clips_dir.iterdir() if p.suffix in (".mp4", ".webm", ".mkv", ".mov")):
            writer.writerow([str(clip.resolve()), "the camera pans slowly to the left"])
    return manifest


def run_job(cluster: LocalRayCluster, manifest: Path, out: Path, weights: str) -> dict[str, float]:
    env = cluster.env()
    env["RAY_ADDRESS"] = cluster.dashboard_url
    began = time.perf_counter()
    proc = subprocess.run([str(REPO / "jobs" / "ray_submit.sh"), f"input.manifest={manifest}", f"output.dir={out}",
                           f"flow.weights={weights}", *JOB], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=3600)
    job_s = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"job on {cluster.dashboard_url} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    stats = json.loads((out / "stats.json").read_text())
    return {"job_s": job_s, "pipeline_s": float(stats["this_run"]["wall_s"])}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips-dir", type=Path, default=None, help="real clips (default: synthetic MovingShapes)")
    parser.add_argument("--num-videos", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--weights", default=os.environ.get("FYC_RAFT_WEIGHTS", "default"),
                        help="flow.weights (a path every node reads; default: torchvision's cache)")
    parser.add_argument("--port", type=int, default=7389, help="GCS port of the one-node cluster (+100: two-node)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fyc_bench_ray_") as tmp:
        root = Path(tmp)
        manifest = make_corpus(root, args.clips_dir, args.num_videos)
        one = LocalRayCluster(Path(tempfile.gettempdir()) / f"fyc_bench_ray1_{os.getpid()}", num_workers=0, cpus_per_node=2,
                              port=args.port, dashboard_port=args.port + 1100)
        two = LocalRayCluster(Path(tempfile.gettempdir()) / f"fyc_bench_ray2_{os.getpid()}", num_workers=1, cpus_per_node=1,
                              port=args.port + 100, dashboard_port=args.port + 1101)
        times: dict[str, list[dict[str, float]]] = {"one_node": [], "two_nodes": []}
        try:
            one.start(tries=6)  # a busy machine can make `ray start` miss its 30 s registration window
            two.start(tries=6)
            for r in range(args.rounds):
                order = [("one_node", one), ("two_nodes", two)] if r % 2 == 0 else [("two_nodes", two), ("one_node", one)]
                for name, cluster in order:
                    t = run_job(cluster, manifest, root / f"{name}_{r}", args.weights)
                    times[name].append(t)
                    print(f"round {r}: {name:9s} job {t['job_s']:6.1f}s pipeline {t['pipeline_s']:6.1f}s", flush=True)
        finally:
            one.stop()
            two.stop()
            subprocess.run(["rm", "-rf", str(one.temp_dir), str(two.temp_dir)], check=False)
    result = {}
    for key in ("job_s", "pipeline_s"):
        a = statistics.median(t[key] for t in times["one_node"])
        b = statistics.median(t[key] for t in times["two_nodes"])
        result[f"one_node_{key}"], result[f"two_nodes_{key}"], result[f"ratio_{key}"] = a, b, b / a
        print(f"{key:10s} median: one node {a:6.1f}s, two nodes {b:6.1f}s, two/one = {b / a:.2f}")
    return result


if __name__ == "__main__":
    main()
