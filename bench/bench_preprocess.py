"""Benchmark of the preprocessing steps, all measured in one run on the same clips:

(a) RAFT alone: the model on the same frame pairs, same batch size (prepared tensors, no I/O);
(b) the steps pipeline: a decode thread (DecodeStep's watchdog worker process) feeding batched
    RAFT + motion in the main thread, an encode thread encoding and writing one tar; with
    `--ray`, the real `fyc-preprocess` job (Ray Data) on the same clips as well;
(c) a plain serial script: decode all frames with PyAV, RAFT pair by pair, motion, encode,
    write one tar.
Prints clips/s, efficiency = (a) / (b) wall time (target >= 0.85), speed-up of (b) over (c)
(target >= 1.2x) and peak RSS of a decode worker on the 1080p clip (target <= 2 GB).

    .venv/bin/python bench/bench_preprocess.py                # quick: 8 clips
    .venv/bin/python bench/bench_preprocess.py --clips 100    # the full run
"""

from __future__ import annotations

import argparse
import io
import json
import queue
import resource
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import av
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from preprocessing.decode_worker import clip_indices, resize_center_crop  # noqa: E402
from preprocessing.steps import DecodeStep, EncodeStep, FlowStep, MotionStep  # noqa: E402
from preprocessing.steps.encode import encode_mp4, encode_png, shard_json  # noqa: E402

ASSETS = REPO.parent / "shared" / "assets"
HD_CLIP = ASSETS / "clips" / "eyebright_water.webm"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=8, help="number of clips (the asset clips, cycled)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--size", type=int, default=256, help="clip and flow size (square)")
    p.add_argument("--batch-size", type=int, default=8, help="frame pairs per RAFT forward")
    p.add_argument("--num-updates", type=int, default=12)
    p.add_argument("--model", default="raft_small")
    p.add_argument("--weights", default=str(ASSETS / "raft" / "raft_small_torchvision.pth"))
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--ray", action="store_true", help="also time the fyc-preprocess Ray job")
    p.add_argument("--out", default=None, help="scratch dir (default: a temp dir)")
    return p.parse_args()


def clip_paths(n: int) -> list[str]:
    clips = sorted(str(p) for p in (ASSETS / "clips").iterdir())
    if not clips:
        sys.exit(f"no clips in {ASSETS / 'clips'}")
    return [clips[i % len(clips)] for i in range(n)]


def rows_for(paths: list[str]) -> list[dict]:
    return [{"id": f"clip{i:05d}", "key": f"clip{i:05d}", "video": p, "caption": "something moves",
             "motion_prompt": "move", "status": "ok", "reason": ""} for i, p in enumerate(paths)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def raft_alone(flow: FlowStep, groups: list[list[np.ndarray]]) -> float:
    """(a): RAFT on the exact pairs of each group the pipeline runs, inputs prepared beforehand."""
    prepared = []
    for clips in groups:
        frames = [flow.prepare(c) for c in clips]
        prepared.append((torch.cat([f[:-1] for f in frames]), torch.cat([f[1:] for f in frames])))
    flow.raft(*[t[: flow.batch_size] for t in prepared[0]])  # warm-up (allocator, kernels)
    sync(flow.device)
    began = time.perf_counter()
    for image1, image2 in prepared:
        flow.raft(image1, image2)
    sync(flow.device)
    return time.perf_counter() - began


def write_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def steps_pipeline(rows: list[dict], decode: DecodeStep, flow: FlowStep, group: int,
                   tar_path: Path) -> tuple[float, list[dict]]:
    """(b): decode thread -> batched flow+motion (this thread) -> encode + tar thread."""
    import webdataset as wds

    decoded: queue.Queue = queue.Queue(maxsize=2 * group)
    flowed: queue.Queue = queue.Queue(maxsize=2)
    done: list[dict] = []

    def decode_loop() -> None:
        for row in rows:
            decoded.put(decode(dict(row)))
        decoded.put(None)

    def encode_loop() -> None:
        encode = EncodeStep(preset="fast")
        with wds.TarWriter(str(tar_path)) as sink:
            while (batch := flowed.get()) is not None:
                for sample in batch:
                    sample = encode(sample)
                    if sample["status"] == "ok":
                        sink.write({"__key__": sample["key"], "mp4": sample["mp4"],
                                    "mask.png": sample["mask_png"], "json": sample["json"]})
                    done.append({k: v for k, v in sample.items() if k not in ("mp4", "mask_png", "mask")})

    began = time.perf_counter()
    threads = [threading.Thread(target=decode_loop, daemon=True), threading.Thread(target=encode_loop, daemon=True)]
    for t in threads:
        t.start()
    pending: list[dict] = []
    while True:
        sample = decoded.get()
        if sample is not None:
            pending.append(sample)
        ok = [s for s in pending if s["status"] == "ok"]
        if pending and (sample is None or len(ok) >= group):
            flowed.put(flow.process_batch(pending))
            pending = []
        if sample is None:
            break
    flowed.put(None)
    for t in threads:
        t.join()
    return time.perf_counter() - began, done


def serial_script(paths: list[str], args: argparse.Namespace, flow: FlowStep, tar_path: Path) -> float:
    """(c): the plain script: PyAV decodes every frame, RAFT pair by pair, encode, one tar."""
    motion = MotionStep()
    size = (args.size, args.size)
    began = time.perf_counter()
    with tarfile.open(tar_path, "w") as tar:
        for i, path in enumerate(paths):
            with av.open(path) as container:
                stream = container.streams.video[0]
                fps = float(stream.average_rate)
                every = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            indices = clip_indices(len(every), args.frames, args.stride, "center")
            frames = np.stack([resize_center_crop(every[j], size) for j in indices])
            del every
            x = flow.prepare(frames)
            pairs = [flow.raft(x[t : t + 1], x[t + 1 : t + 2]) for t in range(len(x) - 1)]
            sample = {"id": f"clip{i:05d}", "video": path, "caption": "something moves", "motion_prompt": "move",
                      "frames": frames, "fps": fps, "stride": args.stride, "frame_indices": indices,
                      "flow": torch.cat(pairs).cpu().numpy(), "flow_info": flow.info, "status": "ok"}
            sample = motion(sample)
            key = f"clip{i:05d}"
            write_tar_member(tar, f"{key}.mp4", encode_mp4(frames, fps / args.stride, preset="fast"))
            write_tar_member(tar, f"{key}.mask.png", encode_png(sample["mask"]))
            write_tar_member(tar, f"{key}.json", json.dumps(shard_json(sample)).encode())
    return time.perf_counter() - began


def hd_peak_rss_mb(args: argparse.Namespace) -> float:
    """Peak RSS of a fresh decode worker that decodes only the 1080p clip."""
    step = DecodeStep(args.frames, args.stride, (args.size, args.size), timeout_s=120)
    try:
        sample = step({"video": str(HD_CLIP)})
    finally:
        step.close()
    if sample["status"] != "ok":
        sys.exit(f"1080p clip failed: {sample['reason']}")
    return sample["decode_peak_rss_mb"]


def ray_job(paths: list[str], args: argparse.Namespace, out: Path) -> float:
    manifest = out / "ray_manifest.csv"
    manifest.write_text("id,video,caption\n" + "".join(
        f"clip{i:05d},{p},a person walks to the left\n" for i, p in enumerate(paths)))
    command = [sys.executable, "-c", "from preprocessing.cli import main; main()",
               f"input.manifest={manifest}", f"output.dir={out / 'ray_out'}",
               f"clip.num_frames={args.frames}", f"clip.stride={args.stride}",
               f"clip.size=[{args.size},{args.size}]", f"flow.size={args.size}", f"flow.model={args.model}",
               f"flow.weights={args.weights}", f"flow.num_updates={args.num_updates}",
               f"flow.batch_size={args.batch_size}", "prompt.require_motion=false"]
    began = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    return time.perf_counter() - began


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or tempfile.mkdtemp(prefix="fyc-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    paths = clip_paths(args.clips)
    rows = rows_for(paths)
    flow = FlowStep(args.model, args.weights, args.num_updates, (args.size, args.size), args.batch_size,
                    args.device, motion=MotionStep())
    pairs_per_clip = args.frames - 1
    group = max(1, args.batch_size // np.gcd(args.batch_size, pairs_per_clip))  # whole RAFT batches
    print(f"{len(paths)} clips, {args.frames} frames, stride {args.stride}, {args.size}px, {args.model} "
          f"{args.num_updates} updates, batch {args.batch_size} pairs, {group} clips per flow call, "
          f"device {flow.device}, torch threads {torch.get_num_threads()}", flush=True)

    decode = DecodeStep(args.frames, args.stride, (args.size, args.size), timeout_s=120)
    decode({"video": paths[0]})  # start the worker before timing (a long-running job pays this once)

    # (b) first, and its decoded frames are re-decoded for (a) so (a) uses the very same pairs
    wall_b, done = steps_pipeline(rows, decode, flow, group, out / "steps.tar")
    ok = [s for s in done if s["status"] == "ok"]
    frames_by_id = {s["id"]: decode({"video": s["video"]})["frames"] for s in rows if any(d["id"] == s["id"] for d in ok)}
    clips = [frames_by_id[s["id"]] for s in rows if s["id"] in frames_by_id]
    groups = [clips[i : i + group] for i in range(0, len(clips), group)]
    wall_a = raft_alone(flow, groups)
    decode.close()
    wall_c = serial_script(paths, args, flow, out / "serial.tar")
    peak = hd_peak_rss_mb(args)
    wall_ray = ray_job(paths, args, out) if args.ray else None

    n = len(paths)
    timings = {k: float(np.sum([s["timings"].get(k, 0.0) for s in done])) for k in ("decode", "flow", "motion", "encode")}
    result = {
        "clips": n, "ok": len(ok), "pairs": len(ok) * pairs_per_clip,
        "raft_alone_s": round(wall_a, 2), "pipeline_s": round(wall_b, 2), "serial_s": round(wall_c, 2),
        "pipeline_clips_per_s": round(n / wall_b, 3), "serial_clips_per_s": round(n / wall_c, 3),
        "raft_s_per_pair": round(wall_a / max(1, len(ok) * pairs_per_clip), 3),
        "efficiency": round(wall_a / wall_b, 3), "speedup_over_serial": round(wall_c / wall_b, 3),
        "decode_worker_peak_rss_1080p_mb": round(peak, 1),
        "bench_process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "step_seconds_summed": {k: round(v, 2) for k, v in timings.items()},
    }
    if wall_ray is not None:
        result.update(ray_job_s=round(wall_ray, 2), ray_clips_per_s=round(n / wall_ray, 3),
                      ray_efficiency=round(wall_a / wall_ray, 3))
    print(f"RAFT alone      {wall_a:8.2f} s  ({result['raft_s_per_pair']} s/pair)")
    print(f"steps pipeline  {wall_b:8.2f} s  {result['pipeline_clips_per_s']} clips/s  "
          f"efficiency {result['efficiency']} (target >= 0.85)")
    print(f"serial script   {wall_c:8.2f} s  {result['serial_clips_per_s']} clips/s  "
          f"speed-up {result['speedup_over_serial']}x (target >= 1.2)")
    if wall_ray is not None:
        print(f"ray job         {wall_ray:8.2f} s  {result['ray_clips_per_s']} clips/s  "
              f"efficiency {result['ray_efficiency']} (includes Ray start-up)")
    print(f"1080p decode worker peak RSS {peak:.0f} MiB (target <= 2048)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
