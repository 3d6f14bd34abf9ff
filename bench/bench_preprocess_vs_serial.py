"""`fyc-preprocess` side by side with a plain serial script and the RAFT-only floor, as whole processes.

On one corpus (MovingShapes clips from `fyc-make-corpus` plus the real videos of `--clips-dir`)
and one set of settings, three commands run as separate processes, alternating, `--repeats` times:

  serial  a plain script: PyAV decodes every frame, RAFT pair by pair, motion, encode, one tar;
  floor   RAFT alone on the job's own pairs (decoded beforehand, untimed), grouped as the job
          groups them (one flow call per `flow.batch_size // (clip.num_frames - 1)` clips, forwards
          of at most `flow.batch_size` pairs, the floor's torch threads): the bound for one flow actor;
  job     the real `fyc-preprocess` with its default plan (in-process up to ray.in_process_max_rows
          rows, else a local Ray Data job), timed as a user sees it (whole process).

Prints the median of each, and the ratios from that one run: speed-up of the job over the serial
script (goal >= 1.2x) and floor / job (goal >= 0.85), plus the job's own per-step seconds.

    .venv/bin/python bench/bench_preprocess_vs_serial.py --clips 100 --clips-dir DIR --weights PTH
    .venv/bin/python bench/bench_preprocess_vs_serial.py --small --clips-dir DIR --weights PTH  # 20 clips
    .venv/bin/python bench/bench_preprocess_vs_serial.py ... --device cuda   # RAFT pairs/s on a GPU

Ratios measured in one run are what counts on a shared machine; `--nice -10` (root) gives the
benchmark's processes priority over other load.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".mov", ".avi"}
REAL_CAPTION = "the camera pans to the left while something moves"  # names a motion: the job keeps it
KINDS = ("serial", "floor", "job")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=100, help="corpus size: the --clips-dir videos + synthetic ones")
    p.add_argument("--small", action="store_true", help="the small-corpus mode: --clips 20")
    p.add_argument("--clips-dir", default=None, help="folder of real videos to include (all of them)")
    p.add_argument("--synthetic-size", type=int, default=256, help="side of the synthetic clips")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--size", type=int, default=256, help="clip and flow size (square)")
    p.add_argument("--num-updates", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=8, help="flow.batch_size: frame pairs per RAFT forward")
    p.add_argument("--model", default="raft_small")
    p.add_argument("--weights", default="default", help="flow.weights (a checkpoint path or 'default')")
    p.add_argument("--device", default="cpu", help="flow.device (cpu | cuda | auto)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each command (median reported)")
    p.add_argument("--job-arg", action="append", default=[], help="extra fyc-preprocess override (repeatable)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES",
                   help="also time fyc-preprocess with these space-separated extra overrides, in the same "
                        "alternation (e.g. 'one_thread=ray.flow_threads=1'); repeatable")
    p.add_argument("--baseline-tree", default=None,
                   help="also time fyc-preprocess from another checkout of this repo (its preprocessing/ and "
                        "conf/), e.g. an older commit unpacked with `git archive`: kind job:baseline")
    p.add_argument("--nice", type=int, default=0, help="niceness of the timed processes (negative: root)")
    p.add_argument("--out", default="out/bench_vs_serial", help="scratch folder (corpus and outputs)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per timed process")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # handed on to the child processes
    if args.small:
        args.clips = 20
    return args


# ---------------------------------------------------------------------------- corpus


def build_corpus(args: argparse.Namespace, root: Path) -> Path:
    """manifest.csv (id, video, caption) of `--clips` rows: the real videos first, then synthetic ones."""
    real = sorted(p.resolve() for p in Path(args.clips_dir).iterdir()
                  if p.suffix.lower() in VIDEO_SUFFIXES) if args.clips_dir else []
    real = real[: args.clips]
    n_synthetic = args.clips - len(real)
    rows = [{"id": f"real_{p.stem}", "video": str(p), "caption": REAL_CAPTION} for p in real]
    if n_synthetic:
        synth = root / f"synthetic_{n_synthetic}x{args.synthetic_size}"
        if not (synth / "manifest.csv").exists():
            subprocess.run([sys.executable, "-m", "preprocessing.synthetic.cli", "--out", str(synth),
                            "--num-videos", str(n_synthetic), "--size", str(args.synthetic_size),
                            str(args.synthetic_size), "--seed", "25", "--static-fraction", "0",
                            "--speed-range", "0.5", "2.0"],
                           check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        for r in csv.DictReader((synth / "manifest.csv").open()):
            rows.append({"id": r["id"], "video": str((synth / r["video"]).resolve()), "caption": r["caption"]})
    manifest = root / f"manifest_{args.clips}.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "video", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def job_overrides(args: argparse.Namespace, manifest: Path) -> list[str]:
    return [f"input.manifest={manifest}", f"clip.num_frames={args.frames}", f"clip.stride={args.stride}",
            f"clip.size=[{args.size},{args.size}]", f"flow.size={args.size}", f"flow.model={args.model}",
            f"flow.weights={args.weights}", f"flow.num_updates={args.num_updates}",
            f"flow.batch_size={args.batch_size}", f"flow.device={args.device}", "prompt.require_motion=false",
            *args.job_arg]


def compose(overrides: list[str]) -> Any:
    """The job's validated config for these overrides (what fyc-preprocess would run with)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from fyc_conf import config_dir
    from preprocessing.config import register_schema, validate

    register_schema()
    with initialize_config_dir(config_dir=config_dir("preprocess"), version_base="1.3"):
        cfg = hydra_compose(config_name="preprocess", overrides=[*overrides, "output.dir=unused"])
    validate(cfg)
    return cfg


# ---------------------------------------------------------------------------- the timed commands


def run_serial(args: argparse.Namespace, manifest: Path, out: Path) -> dict[str, Any]:
    """The plain script a user would write first: everything in one loop, one pair at a time."""
    import av
    import numpy as np
    import torch

    from preprocessing.decode_worker import clip_indices, resize_center_crop
    from preprocessing.steps import FlowStep, MotionStep
    from preprocessing.steps.encode import encode_mp4, encode_png, shard_json

    flow = FlowStep(args.model, args.weights, args.num_updates, (args.size, args.size), 1, args.device)
    motion = MotionStep()
    rows = list(csv.DictReader(manifest.open()))
    ok = 0
    with tarfile.open(out / "serial.tar", "w") as tar:
        for row in rows:
            try:
                with av.open(row["video"]) as container:
                    stream = container.streams.video[0]
                    fps = float(stream.average_rate or 25)
                    every = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
                indices = clip_indices(len(every), args.frames, args.stride, "center")
            except Exception as exc:  # noqa: BLE001 - a plain script skips what it cannot read
                print(f"serial: skipping {row['video']}: {exc}", file=sys.stderr)
                continue
            frames = np.stack([resize_center_crop(every[j], (args.size, args.size)) for j in indices])
            del every
            x = flow.prepare(frames)
            with torch.inference_mode():
                pairs = [flow.raft(x[t : t + 1], x[t + 1 : t + 2]) for t in range(len(x) - 1)]
            sample = motion({"id": row["id"], "video": row["video"], "caption": row["caption"],
                             "motion_prompt": "", "frames": frames, "fps": fps, "stride": args.stride,
                             "frame_indices": indices, "flow": torch.cat(pairs).cpu().numpy(),
                             "flow_info": flow.info, "status": "ok"})
            for name, data in ((f"{row['id']}.mp4", encode_mp4(frames, fps / args.stride)),
                               (f"{row['id']}.mask.png", encode_png(sample["mask"])),
                               (f"{row['id']}.json", json.dumps(shard_json(sample)).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            ok += 1
    return {"ok": ok}


def run_floor(args: argparse.Namespace, manifest: Path, out: Path) -> dict[str, Any]:
    """RAFT alone on the job's pairs, with the job's grouping; only the RAFT forwards are timed."""
    import numpy as np
    import torch

    from preprocessing.config import to_container
    from preprocessing.ray_stages import DecodeStage, pack, unpack
    from preprocessing.sources import load_rows
    from preprocessing.steps import FlowStep

    cfg = compose(job_overrides(args, manifest))
    cfg_dict = to_container(cfg)
    threads = cfg.ray.flow_threads or os.cpu_count() or 1
    torch.set_num_threads(int(threads))  # what the job's single CPU flow actor uses
    decode = DecodeStage(cfg_dict)
    clips = []
    for row in load_rows(cfg.input, cfg.limit):
        batch = pack(0, row.to_sample())
        result = decode({k: np.array([v], dtype=object) for k, v in batch.items()})
        for payload in result["payload"]:
            s = unpack(payload)
            if s.get("status", "ok") == "ok":
                clips.append(s.get("flow_frames", s["frames"]))
    decode.decode.close()
    flow = FlowStep(args.model, args.weights, args.num_updates, (cfg.flow.size, cfg.flow.size),
                    args.batch_size, "cuda" if args.device == "cuda" else "cpu")
    per_call = max(1, args.batch_size // max(1, args.frames - 1))  # pipeline.py: clips per flow call
    calls = []
    for lo in range(0, len(clips), per_call):
        prepared = [flow.prepare(c) for c in clips[lo : lo + per_call]]
        calls.append((torch.cat([p[:-1] for p in prepared]), torch.cat([p[1:] for p in prepared])))
    flow.raft(calls[0][0][:1], calls[0][1][:1])  # warm-up: allocator, kernels, cuDNN choice
    sync = torch.cuda.synchronize if flow.device.type == "cuda" else (lambda: None)
    sync()
    began = time.perf_counter()
    for image1, image2 in calls:
        flow.raft(image1, image2)
    sync()
    raft_s = time.perf_counter() - began
    pairs = sum(len(c) - 1 for c in clips)
    return {"raft_s": raft_s, "pairs": pairs, "clips": len(clips), "torch_threads": torch.get_num_threads(),
            "pairs_per_s": pairs / raft_s}


def timed_process(args: argparse.Namespace, kind: str, manifest: Path, out: Path) -> dict[str, Any]:
    """Run one command as its own process; wall time of the whole process."""
    out.mkdir(parents=True, exist_ok=True)
    result = out / "result.json"
    env, cwd = None, REPO
    if kind == "job:baseline":
        cwd = Path(args.baseline_tree).resolve()
        env = {**os.environ, "PYTHONPATH": str(cwd)}
        command = [sys.executable, "-m", "preprocessing.cli", *job_overrides(args, manifest), f"output.dir={out / 'job'}"]
    elif kind.startswith("job"):
        extra = variants(args).get(kind, [])
        command = [str(Path(sys.executable).with_name("fyc-preprocess")), *job_overrides(args, manifest), *extra,
                   f"output.dir={out / 'job'}"]
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--run", kind, "--manifest", str(manifest),
                   "--result", str(result), *args.argv]
    nice = (lambda: os.nice(args.nice)) if args.nice else None
    began_epoch = time.time()
    began = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, preexec_fn=nice, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - began
    if proc.returncode:
        sys.exit(f"{kind} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    info: dict[str, Any] = {"wall_s": wall}
    if kind.startswith("job"):
        stats = json.loads((out / "job" / "stats.json").read_text())
        info["job_wall_s"] = stats["this_run"]["wall_s"]  # inside run(): without imports and the report
        info["step_seconds"] = stats["this_run"]["step_seconds"]
        info["ok"] = stats["counts"]["by_status"].get("ok", 0)
        info["phases"] = job_phases(out / "job", began_epoch, began_epoch + wall)
    else:
        info.update(json.loads(result.read_text()))
    return info


def job_phases(job_dir: Path, began: float, ended: float) -> dict[str, float]:
    """Where the job's wall time went, from its own log's timestamps (the latest run in job_dir):
    start-up (Python, Hydra, imports, rows) | Ray start (ray.init, nodes, plan) | execution (actor
    start-up, decode, flow, encode, shard writes) | finish (Ray shutdown, manifest, stats, report)
    | exit (interpreter teardown)."""
    from datetime import datetime

    logs = sorted(job_dir.glob(".hydra/*/cli.log"))
    if not logs:
        return {}
    stamps: dict[str, float] = {}
    for line in logs[-1].read_text().splitlines():
        if not line.startswith("["):
            continue
        when = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        stamps.setdefault("first", when)
        for mark, key in (("Ray Data:", "ray"), ("in-process:", "ray"), ("chunk ", "chunk"), ("done:", "done")):
            if mark in line and (key == "chunk" or key not in stamps):
                stamps[key] = when
    if not {"first", "ray", "chunk", "done"} <= stamps.keys():
        return {}
    return {"startup_s": round(stamps["first"] - began, 2), "ray_start_s": round(stamps["ray"] - stamps["first"], 2),
            "execution_s": round(stamps["chunk"] - stamps["ray"], 2), "finish_s": round(stamps["done"] - stamps["chunk"], 2),
            "exit_s": round(ended - stamps["done"], 2)}


def variants(args: argparse.Namespace) -> dict[str, list[str]]:
    """--variant NAME=OVERRIDES -> {"job:NAME": [override, ...]}"""
    found = {}
    for spec in args.variant:
        name, _, overrides = spec.partition("=")
        if not name or not overrides:
            sys.exit(f"--variant {spec!r}: expected NAME=OVERRIDES, e.g. one_thread=ray.flow_threads=1")
        found[f"job:{name}"] = overrides.split()
    if args.baseline_tree:
        found["job:baseline"] = []
    return found


# ---------------------------------------------------------------------------- report


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    root = Path(args.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    manifest = build_corpus(args, root)
    print(f"{args.clips} clips ({manifest}), {args.frames} frames, stride {args.stride}, {args.size} px, "
          f"{args.model} {args.num_updates} updates, batch {args.batch_size} pairs, device {args.device}, "
          f"{args.repeats} alternating runs each, {os.cpu_count()} CPUs", flush=True)
    kinds = (*KINDS, *variants(args))
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for rep in range(args.repeats):
        order = kinds if rep % 2 == 0 else kinds[::-1]  # alternate so drift in load hits all alike
        for kind in order:
            info = timed_process(args, kind, manifest, root / f"{kind.replace(':', '_')}_{rep}")
            runs[kind].append(info)
            print(f"  run {rep + 1} {kind:10s} {info['wall_s']:8.1f} s"
                  + (f"  (RAFT alone {info['raft_s']:.1f} s, {info['pairs']} pairs)" if kind == "floor" else ""),
                  flush=True)
    serial, job = median(runs["serial"], "wall_s"), median(runs["job"], "wall_s")
    floor = median(runs["floor"], "raft_s")
    result = {
        "clips": args.clips, "ok_job": runs["job"][-1].get("ok"), "ok_serial": runs["serial"][-1]["ok"],
        "pairs": runs["floor"][-1]["pairs"], "torch_threads": runs["floor"][-1]["torch_threads"],
        "serial_s": round(serial, 2), "job_s": round(job, 2), "floor_raft_s": round(floor, 2),
        "raft_pairs_per_s": round(runs["floor"][-1]["pairs"] / floor, 3),
        "speedup_over_serial": round(serial / job, 3), "floor_over_job": round(floor / job, 3),
        "job_run_s": round(median(runs["job"], "job_wall_s"), 2), "job_step_seconds": runs["job"][-1]["step_seconds"],
        "job_phases": runs["job"][-1].get("phases"),
        "runs": {k: [round(r["wall_s"], 2) for r in v] for k, v in runs.items()},
    }
    print(f"serial script   {serial:8.1f} s")
    print(f"RAFT-only floor {floor:8.1f} s  ({result['raft_pairs_per_s']} pairs/s)")
    print(f"fyc-preprocess  {job:8.1f} s  phases {result['job_phases']}, step seconds {result['job_step_seconds']}")
    print(f"speed-up over serial: {result['speedup_over_serial']}x (goal >= 1.2)")
    print(f"floor / job: {result['floor_over_job']} (goal >= 0.85)")
    for kind in variants(args):
        wall = median(runs[kind], "wall_s")
        result[kind] = {"s": round(wall, 2), "speedup_over_serial": round(serial / wall, 3),
                        "floor_over_job": round(floor / wall, 3), "step_seconds": runs[kind][-1].get("step_seconds"),
                        "phases": runs[kind][-1].get("phases")}
        print(f"{kind}: {wall:.1f} s, speed-up over serial {serial / wall:.3f}x, floor / job {floor / wall:.3f}")
    print(json.dumps(result))
    return result


def child(argv: list[str]) -> None:
    """`--run serial|floor --manifest M --result R ...`: one timed command, its result as json."""
    p = argparse.ArgumentParser()
    p.add_argument("--run", choices=("serial", "floor"))
    p.add_argument("--manifest")
    p.add_argument("--result")
    own, rest = p.parse_known_args(argv)
    args = parse_args(rest)
    out = Path(own.result).parent
    fn = run_serial if own.run == "serial" else run_floor
    Path(own.result).write_text(json.dumps(fn(args, Path(own.manifest), out)))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    if "--run" in sys.argv:
        child(sys.argv[1:])
    else:
        main()
