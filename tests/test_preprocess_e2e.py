"""fyc-preprocess end to end: real CLI (subprocess), real local Ray (2 CPUs), real decord, real RAFT
weights; synthetic clips of known motion plus every kind of bad input; resume after SIGKILL."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from preprocessing.synthetic.moving_shapes import generate_corpus

REPO = Path(__file__).resolve().parents[1]
FAST = ["clip.num_frames=4", "clip.stride=2", "clip.size=[128,128]", "flow.size=128", "flow.num_updates=4",
        "flow.batch_size=6", "shard.max_samples=5", "ray.num_cpus=2"]
GOOD = 6


def cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "preprocessing.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, **kwargs)


def cli_popen(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "preprocessing.cli", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def build_corpus(root: Path) -> tuple[Path, dict[str, str]]:
    """Synthetic good clips + bad rows; returns the manifest and the expected reason slug by id."""
    manifest = generate_corpus(root / "shapes", GOOD, seed=3, height=128, width=128, num_frames=16, progress=False)
    rows = list(csv.DictReader(manifest.open()))
    good = [{"video": str((manifest.parent / r["video"]).resolve()), "caption": r["caption"], "id": r["id"],
             "color": r["color"], "truth": r["direction"]} for r in rows]
    bad_dir = root / "bad"
    bad_dir.mkdir()
    real = Path(good[0]["video"]).read_bytes()
    (bad_dir / "corrupt.mp4").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8)))
    (bad_dir / "truncated.mp4").write_bytes(real[: len(real) // 3])
    (bad_dir / "empty.mp4").write_bytes(b"")
    (bad_dir / "notes.mp4").write_text("this is not a video\n" * 50)
    short = generate_corpus(root / "short", 1, seed=4, height=128, width=128, num_frames=3, progress=False)
    short_video = str((short.parent / next(csv.DictReader(short.open()))["video"]).resolve())
    moving = "a blue square slides to the left"
    bad = [
        ("corrupt", "corrupt.mp4", moving), ("truncated", "truncated.mp4", moving), ("empty", "empty.mp4", moving),
        ("notvideo", "notes.mp4", moving), ("short", short_video, moving), ("missing", "nope/missing.mp4", moving),
        ("unreachable", "http://127.0.0.1:9/clip.mp4", moving), ("ftp", "ftp://example.com/a.mp4", moving),
        ("nocaption", "corrupt.mp4", ""), ("still", good[1]["video"], "a still photo of a vase"),
        (good[0]["id"], good[2]["video"], moving),  # duplicate id
    ]
    expected = {"corrupt": "error", "truncated": "error", "empty": "error", "notvideo": "error",
                "short": "filtered|error", "missing": "error", "unreachable": "error", "ftp": "error",
                "nocaption": "error", "still": "filtered"}
    path = bad_dir / "manifest.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["video", "caption", "id", "color", "truth"])
        writer.writeheader()
        writer.writerows(good)
        for rid, video, caption in bad:
            writer.writerow({"video": video, "caption": caption, "id": rid, "color": "", "truth": ""})
    return path, expected


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def common(manifest: Path, out: Path, weights: Path) -> list[str]:
    return [f"input.manifest={manifest}", f"output.dir={out}", f"flow.weights={weights}", *FAST]


@pytest.fixture(scope="module")
def full_run(corpus, tmp_path_factory, raft_small_path) -> Path:
    manifest, _ = corpus
    out = tmp_path_factory.mktemp("run") / "out"
    began = time.perf_counter()
    proc = cli(common(manifest, out, raft_small_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    print(f"full run: {time.perf_counter() - began:.1f}s")
    return out


def read_shards(out: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for tar_path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for info in tar:
                key, _, ext = info.name.partition(".")
                samples.setdefault(key, {})[ext] = tar.extractfile(info).read()
    return samples


@pytest.mark.slow
def test_manifest_has_one_row_per_input_with_reasons(full_run, corpus):
    manifest, expected = corpus
    df = pd.read_parquet(full_run / "manifest.parquet")
    inputs = pd.read_csv(manifest, keep_default_na=False)
    assert len(df) == len(inputs) and list(df["row_index"]) == list(range(len(inputs)))
    assert df["key"].is_unique
    good = df.iloc[:GOOD]
    assert (good["status"] == "ok").all(), good[["id", "reason"]]
    assert good["shard"].str.match(r"shards/shard-\d{6}\.tar").all()
    assert (good["magnitude"] > 0.2).all() and (good["motion_prompt"] != "").all()
    for rid, status in expected.items():
        row = df[df["id"] == rid].iloc[0]
        assert row["status"] in status.split("|"), (rid, row["status"], row["reason"])
        assert row["reason"] and row["shard"] == "", (rid, row["reason"])
    reasons = dict(zip(df["id"], df["reason"]))
    assert reasons["missing"].startswith("missing_file")
    assert reasons["empty"].startswith("empty_file")
    assert reasons["unreachable"].startswith("fetch_error")
    assert reasons["ftp"].startswith("bad_url")
    assert reasons["nocaption"].startswith("bad_row: missing caption")
    assert reasons["still"].startswith("no_motion_in_caption")
    dup = df.iloc[-1]
    assert dup["status"] == "error" and dup["reason"].startswith("duplicate_id")
    assert json.loads(df.iloc[0]["extra"]) == {"color": inputs.iloc[0]["color"], "truth": inputs.iloc[0]["truth"]}
    assert list(good["direction"]) == list(inputs["truth"][:GOOD])  # mean flow inside the mask points the right way
    stats = json.loads((full_run / "stats.json").read_text())
    assert stats["counts"]["rows"] == len(inputs) and stats["counts"]["by_status"]["ok"] == GOOD
    assert stats["counts"]["by_reason"]["error"]["duplicate_id"] == 1
    assert {"torch", "torchvision", "ray", "python"} <= stats["versions"].keys()
    assert stats["this_run"]["clips_per_s"] > 0 and "flow" in stats["this_run"]["step_seconds"]
    assert not list(full_run.rglob("*.tmp"))


@pytest.mark.slow
def test_shards_follow_the_schema_and_load_in_webdataset(full_run):
    import av
    import decord
    import webdataset as wds
    from PIL import Image

    samples = read_shards(full_run)
    df = pd.read_parquet(full_run / "manifest.parquet")
    assert sorted(samples) == sorted(df[df["status"] == "ok"]["key"])
    for key, parts in samples.items():
        assert "." not in key and "/" not in key and set(parts) == {"mp4", "json", "mask.png"}
        meta = json.loads(parts["json"])
        assert {"id", "caption", "motion_prompt", "magnitude", "flow", "source"} <= meta.keys()
        assert {"model", "weights", "num_updates", "height", "width", "stride", "pair_magnitudes"} <= meta["flow"].keys()
        assert len(meta["flow"]["pair_magnitudes"]) == 3 and meta["source"]["frame_indices"]
        mask = Image.open(io.BytesIO(parts["mask.png"]))
        assert mask.mode == "L" and mask.size == (128, 128)
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        reader = decord.VideoReader(io.BytesIO(parts["mp4"]))
        assert len(reader) == 4 and reader[0].shape == (128, 128, 3)
        with av.open(io.BytesIO(parts["mp4"])) as container:
            assert sum(1 for _ in container.decode(video=0)) == 4
    urls = [str(p) for p in sorted((full_run / "shards").glob("*.tar"))]
    loaded = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert sorted(s["__key__"] for s in loaded) == sorted(samples)


@pytest.mark.slow
def test_rerun_changes_nothing_and_kill_then_resume_equals_uninterrupted(full_run, corpus, tmp_path, raft_small_path):
    manifest, _ = corpus
    before = {p.name: p.read_bytes() for p in (full_run / "shards").glob("*.tar")}
    mtimes = {p.name: p.stat().st_mtime_ns for p in (full_run / "parts").glob("*.parquet")}
    again = cli(common(manifest, full_run, raft_small_path))  # everything done: no Ray work, nothing rewritten
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in (full_run / "parts").glob("*.parquet")} == mtimes
    assert {p.name: p.read_bytes() for p in (full_run / "shards").glob("*.tar")} == before

    out = tmp_path / "killed"
    proc = cli_popen(common(manifest, out, raft_small_path))
    deadline = time.time() + 400
    while not (out / "parts" / "part-000000.parquet").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before its first chunk"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.parquet").exists()  # it really died mid-run
    resumed = cli(common(manifest, out, raft_small_path))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Ray Data may finish later chunks within the same second as the first: at least chunk 0 was done.
    import re
    done = re.search(r"(\d+) already done", resumed.stderr + resumed.stdout)
    assert done and int(done.group(1)) >= 1
    after = {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")}
    assert after.keys() == before.keys()
    a, b = read_shards(full_run), read_shards(out)
    assert a.keys() == b.keys()
    for key in a:  # same json, masks and clip bytes
        assert a[key] == b[key], key
    assert after == before  # and byte-identical tars
    cols = ["id", "key", "status", "reason", "shard", "motion_prompt", "magnitude"]
    left = pd.read_parquet(full_run / "manifest.parquet")[cols]
    right = pd.read_parquet(out / "manifest.parquet")[cols]
    pd.testing.assert_frame_equal(left, right)


@pytest.mark.slow
def test_retry_errors_reprocesses_only_errors_without_touching_shards(full_run, corpus, tmp_path, raft_small_path):
    manifest, _ = corpus
    import shutil

    out = tmp_path / "retry"
    shutil.copytree(full_run, out)
    (out / ".lock").unlink()
    before = {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")}
    # the missing file appears before the retry (e.g. a mount came back)
    missing = manifest.parent / "nope" / "missing.mp4"
    missing.parent.mkdir(exist_ok=True)
    df0 = pd.read_parquet(out / "manifest.parquet")
    good_video = df0.iloc[3]["video"]
    missing.write_bytes(Path(good_video).read_bytes())
    try:
        proc = cli(common(manifest, out, raft_small_path) + ["retry_errors=true"])
    finally:
        missing.unlink()
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, data in before.items():
        assert (out / "shards" / name).read_bytes() == data
    df = pd.read_parquet(out / "manifest.parquet")
    row = df[df["id"] == "missing"].iloc[0]
    assert row["status"] == "ok" and row["shard"].startswith("shards/retry-000001-")
    assert (out / row["shard"]).exists() and row["key"] in read_shards(out)
    assert (df["status"] == "ok").sum() == (df0["status"] == "ok").sum() + 1
    assert len(df) == len(df0)


def test_second_run_on_a_locked_output_refuses(corpus, tmp_path, raft_small_path):
    from preprocessing.lock import OutputLock

    manifest, _ = corpus
    out = tmp_path / "locked"
    with OutputLock(out):
        proc = cli(common(manifest, out, raft_small_path))
    assert proc.returncode == 3
    log = proc.stdout + proc.stderr  # Hydra logs to stdout
    assert "in use by another fyc-preprocess run" in log and str(out) in log
    assert not (out / "shards").exists()


@pytest.mark.parametrize("override, needle", [
    ("input.manifset=x.csv", "manifset"),
    ("flow.modle=raft_small", "modle"),
    ("clip.size=[100,128]", "clip.size"),
    ("flow.size=64", "flow.size"),
    ("flow.model=raft_huge", "raft_small, raft_large"),
    ("flow.mask=fancy", "robust, paper"),
    ("prompt.extractor=gpt", "builtin, llm"),
    ("input.format=xml", "input.format"),
    ("input.dir=/tmp", "exactly one of input.manifest"),
])
def test_config_errors_name_the_key(corpus, tmp_path, override, needle):
    manifest, _ = corpus
    proc = cli([f"input.manifest={manifest}", f"output.dir={tmp_path / 'o'}", override])
    assert proc.returncode != 0
    assert needle in proc.stderr + proc.stdout
    assert not (tmp_path / "o" / "shards").exists()
