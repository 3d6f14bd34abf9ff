"""fyc-curate through the real command, on ONE small fyc-preprocess output built per module.

The source: 8 MovingShapes clips, two near-duplicates of clip 0 (re-encoded at another quality;
resized to 80x80 and re-encoded) and one missing file (an `error` row), preprocessed with
Farneback flow at 32x32. Each test runs one or two curate commands on it; all but the kill test
join one Ray cluster started here (a local Ray start per command would dominate the runtime),
the kill test starts its own (the command's local-Ray path) so its fault hook reaches the workers.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fault_table import record_fault

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOOKS = Path(__file__).resolve().parent / "curate_hooks"
DUPLICATES = ("dup_reencoded", "dup_resized")


def _reencode(src: Path, dst: Path, size: int, crf: int) -> None:
    import av
    from PIL import Image

    with av.open(str(src)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            image = np.asarray(Image.fromarray(frame).resize((size, size), Image.BILINEAR))
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    return proc


def curate(*args: str, ray_address: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    extra = [f"ray.address={ray_address}"] if ray_address else ["ray.num_cpus=2"]
    proc = run([str(BIN / "fyc-curate"), *args, *extra, "report_thumbnails=2"])
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def read_shards(out: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for tar_path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for info in tar:
                key, _, ext = info.name.partition(".")
                assert ext not in samples.get(key, {}), f"{key}.{ext} twice"
                samples.setdefault(key, {})[ext] = tar.extractfile(info).read()
    return samples


def folder_bytes(out: Path) -> dict[str, bytes]:
    """Every file a curation writes (not the lock), by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def ray_address():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def source(tmp_path_factory, ray_address) -> Path:
    """fyc-make-corpus + near-duplicates + a missing file -> fyc-preprocess (Farneback, 32x32)."""
    root = tmp_path_factory.mktemp("curate_source")
    proc = run([str(BIN / "fyc-make-corpus"), "--out", str(root / "corpus"), "--num-videos", "8", "--size", "64", "64",
                "--frames", "12", "--seed", "5"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    corpus = root / "corpus"
    rows = list(csv.DictReader((corpus / "manifest.csv").open()))
    first = corpus / rows[0]["video"]
    _reencode(first, corpus / "videos" / "dup_reencoded.mp4", 64, 36)
    _reencode(first, corpus / "videos" / "dup_resized.mp4", 80, 23)
    extra = [{**rows[0], "id": "dup_reencoded", "video": "videos/dup_reencoded.mp4"},
             {**rows[0], "id": "dup_resized", "video": "videos/dup_resized.mp4"},
             {**rows[1], "id": "missing", "video": "videos/missing.mp4"}]
    with (corpus / "all.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:3] + extra + rows[3:])
    out = root / "src"
    proc = run([sys.executable, "-m", "preprocessing.cli", f"input.manifest={corpus / 'all.csv'}", f"output.dir={out}",
                "flow.model=farneback", "clip.num_frames=8", "clip.stride=1", "clip.size=[32,32]", "flow.size=128",
                "shard.max_samples=4", f"ray.address={ray_address}", "report_thumbnails=2"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out


def query_for(src: Path) -> str:
    """A query keeping about half of the ok rows (median magnitude)."""
    ok = pd.read_parquet(src / "manifest.parquet").query("status == 'ok'")
    return f"magnitude > {ok['magnitude'].median():.6f}"


@pytest.fixture(scope="module")
def selected(source, tmp_path_factory, ray_address) -> Path:
    out = tmp_path_factory.mktemp("curate_selected") / "dst"
    curate(f"input.dir={source}", f"output.dir={out}", f"select.query={query_for(source)}", "shard.max_samples=2",
           ray_address=ray_address)
    return out


@pytest.mark.slow
def test_select_writes_exactly_the_matching_ok_rows_byte_identical_and_accounts_for_every_row(
        source, selected, tmp_path, ray_address):
    src_manifest = pd.read_parquet(source / "manifest.parquet")
    dst_manifest = pd.read_parquet(selected / "manifest.parquet")
    expected = src_manifest.query("status == 'ok'").query(query_for(source))
    assert 0 < len(expected) < (src_manifest["status"] == "ok").sum()
    # exactly the matching ok rows, each sample's members byte-identical to the source's
    src_samples, dst_samples = read_shards(source), read_shards(selected)
    assert set(dst_samples) == set(expected["key"])
    for key, members in dst_samples.items():
        assert members == src_samples[key], key
    # every source row once, with its fate and reason
    assert len(dst_manifest) == len(src_manifest)
    assert sorted(zip(dst_manifest["source_row_index"], dst_manifest["id"])) == \
        sorted(zip(src_manifest["row_index"], src_manifest["id"]))
    kept = dst_manifest[dst_manifest["curation"] == "kept"]
    assert set(kept["key"]) == set(expected["key"]) and (kept["status"] == "ok").all()
    assert kept["curation_reason"].str.contains("matches select.query").all()
    dropped = dst_manifest[dst_manifest["curation"] == "dropped"].set_index("id")
    assert dropped.loc["missing", "reason"].startswith("not_ok: input row has status error")
    assert dropped["reason"].str.match(r"^(not_ok|select): ").all()
    assert (dst_manifest["shard"] != "").sum() == len(kept)
    for shard, rows in kept.groupby("shard"):  # the manifest says where each kept sample is
        with tarfile.open(selected / shard) as tar:
            assert {n.split(".")[0] for n in tar.getnames()} == set(rows["key"])
    assert len(list((selected / "shards").glob("*.tar"))) == -(-len(kept) // 2)
    stats = json.loads((selected / "stats.json").read_text())
    assert stats["curation"]["kept"] == len(kept) and (selected / "report.html").stat().st_size > 1000

    # idempotent: a re-run over the finished folder changes nothing (bytes and mtimes)
    before = folder_bytes(selected)
    mtimes = {p: p.stat().st_mtime_ns for p in selected.rglob("*") if p.is_file() and p.name != ".lock"}
    curate(f"input.dir={source}", f"output.dir={selected}", f"select.query={query_for(source)}",
           "shard.max_samples=2", ray_address=ray_address)
    assert folder_bytes(selected) == before
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    # other settings over the same folder are refused, naming what differs; nothing is touched
    proc = curate(f"input.dir={source}", f"output.dir={selected}", "select.query=magnitude > 0",
                  "shard.max_samples=2", ray_address=ray_address, check=False)
    assert proc.returncode == 3 and "holds a curation made with other select" in proc.stdout + proc.stderr
    assert folder_bytes(selected) == before
    # a bad query names the key and the columns, before anything is written
    proc = curate(f"input.dir={source}", f"output.dir={tmp_path / 'bad'}", "select.query=magnitud > 1",
                  ray_address=ray_address, check=False)
    logged = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "select.query='magnitud > 1' does not evaluate" in logged, logged[-2000:]
    assert "columns: row_index" in logged and not (tmp_path / "bad" / "shards").exists()

    # inspect: summary, and one sample dumped byte for byte
    key = sorted(kept["key"])[0]
    proc = run([str(BIN / "fyc-curate"), "inspect", str(selected), "--key", key, "--dump", str(tmp_path / "look")])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{len(src_manifest)} manifest rows, {len(kept)} ok" in proc.stdout and "motion prompts" in proc.stdout
    for ext in ("mp4", "mask.png", "json"):
        assert (tmp_path / "look" / f"{key}.{ext}").read_bytes() == src_samples[key][ext]


@pytest.mark.slow
def test_merge_reprompt_dedupe_balance_in_one_run(source, selected, tmp_path, ray_address):
    """Merge the source with its own curated subset (every subset row collides), re-extract the
    prompts with an LLM endpoint, drop the near-duplicates, cap clips per prompt."""
    _FakeLLM.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    out = tmp_path / "merged"
    try:
        curate(f"input.dirs=[{source},{selected}]", f"output.dir={out}", "reprompt.enabled=true",
               "reprompt.prompt.extractor=llm", f"reprompt.prompt.llm.url={url}", "dedupe.enabled=true",
               "balance.max_per_prompt=2", ray_address=ray_address)
    finally:
        server.shutdown()
        server.server_close()
    src = pd.read_parquet(source / "manifest.parquet")
    sub = pd.read_parquet(selected / "manifest.parquet")
    m = pd.read_parquet(out / "manifest.parquet")
    assert len(m) == len(src) + len(sub)
    # collisions: every ok row of the second input is dropped naming the first input's row
    second = m[m["source_index"] == 1]
    collided = second[second["source_status"] == "ok"]
    assert len(collided) == (sub["status"] == "ok").sum() > 0
    assert collided["reason"].str.startswith("collision: id ").all()
    assert collided["reason"].str.contains(f"already taken by input 0 \\({source}\\)").all()
    # near-duplicates dropped, naming the kept twin (the original clip)
    first = m[m["source_index"] == 0].set_index("id")
    original = first.loc[src.iloc[0]["id"]]
    for dup in DUPLICATES:
        assert first.loc[dup, "reason"].startswith(f"dedupe: near-duplicate of {original['key']} (input 0 row 0, kept)")
    assert (m["reason"].str.startswith("dedupe:")).sum() == len(DUPLICATES), m[["id", "reason"]].to_string()
    # re-prompted: manifest and json carry the endpoint's prompt; clip and mask bytes untouched
    kept = m[m["curation"] == "kept"]
    assert (kept["motion_prompt"].str.startswith("llm ")).all() and (kept["prompt_source"] == "llm").all()
    src_samples, out_samples = read_shards(source), read_shards(out)
    for _, row in kept.iterrows():
        got, was = out_samples[row["key"]], src_samples[row["key"]]
        assert got["mp4"] == was["mp4"] and got["mask.png"] == was["mask.png"]
        meta, old = json.loads(got["json"]), json.loads(was["json"])
        assert meta.pop("motion_prompt") == row["motion_prompt"] == "llm " + row["caption"].split()[-1]
        old.pop("motion_prompt")
        assert meta == old
    # balance: at most 2 per prompt; the over-cap rows say so
    assert kept["motion_prompt"].value_counts().max() <= 2
    capped = m[m["reason"].str.startswith("balance: prompt")]
    assert len(capped) > 0 and capped["reason"].str.contains("over balance.max_per_prompt=2").all()
    for prompt in capped["motion_prompt"]:
        assert (kept["motion_prompt"] == prompt).sum() == 2


class _FakeLLM(BaseHTTPRequestHandler):
    """OpenAI-compatible endpoint: the motion is 'llm <last word of the caption>'."""

    calls: list[list[str]] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        captions = json.loads(body["messages"][-1]["content"])
        type(self).calls.append(captions)
        answer = [{"objects": ["thing"], "motion": f"llm {c.split()[-1]}"} for c in captions]
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": json.dumps(answer)}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


LATENTS = ["latents.enabled=true", "latents.autoencoder=tiny", "latents.tiny.factor=2", "latents.tiny.scale=1.0"]


@pytest.fixture(scope="module")
def latent_shards(source, tmp_path_factory, ray_address) -> Path:
    """The `selected` curation plus latents (same rows, same shard layout)."""
    out = tmp_path_factory.mktemp("curate_latents") / "dst"
    curate(f"input.dir={source}", f"output.dir={out}", f"select.query={query_for(source)}", "shard.max_samples=2",
           *LATENTS, ray_address=ray_address)
    return out


@pytest.mark.slow
def test_killed_latents_run_rerun_equals_uninterrupted(source, latent_shards, tmp_path, ray_address):
    """SIGKILL the job (driver + its own local Ray) between two shard commits; the same command
    re-run (here on the shared cluster: ray.* is not part of a curation's settings) gives
    byte-identical shards, parts and manifest."""
    out = tmp_path / "killed"
    argv = [str(BIN / "fyc-curate"), f"input.dir={source}", f"output.dir={out}", f"select.query={query_for(source)}",
            "shard.max_samples=2", *LATENTS, "ray.writers=1", "report_thumbnails=2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HOOKS), str(REPO)]), "FYC_FAULT_SLOW_SHARD_COMMIT": "2"}
    reference = folder_bytes(latent_shards)
    proc = subprocess.Popen([*argv, "ray.num_cpus=2"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    began = time.perf_counter()
    while not list(out.glob("parts/part-*.parquet")):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.perf_counter() - began < 600, "no chunk committed in 600 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    visible = {p: b for p, b in folder_bytes(out).items() if p.startswith("shards/") and p.endswith(".tar")}
    for name, data in visible.items():  # only complete shards are ever visible
        assert data == reference[name], name
    assert not (out / "manifest.parquet").exists(), "the run finished before the kill"
    committed = len(list(out.glob("parts/part-*.parquet")))
    proc = run([*argv, f"ray.address={ray_address}"])
    logged = proc.stdout + proc.stderr
    assert proc.returncode == 0, logged[-4000:]
    assert "resuming: plan of" in logged and f"({committed} already done" in logged, logged[-3000:]
    got = folder_bytes(out)
    assert got.keys() == reference.keys()
    for name in reference:
        if name not in ("stats.json", "report.html"):  # this run's timings and paths
            assert got[name] == reference[name], name
    record_fault(
        "curation", f"fyc-curate (latents on) SIGKILLed with its local Ray between two shard commits "
        f"({committed} chunk(s) committed, {len(visible)} shard(s) visible)",
        "only complete shards visible; the same command re-run equals an uninterrupted run",
        "the re-run reused the stored plan, skipped the committed chunks and wrote byte-identical shards, "
        "parts, plan and manifest", {"files_compared": len(reference) - 2, "chunks_committed_at_kill": committed},
        "test_curate.py::test_killed_latents_run_rerun_equals_uninterrupted")


@pytest.mark.slow
def test_training_on_latent_shards_matches_training_on_video_and_refuses_another_autoencoder(
        selected, latent_shards, tmp_path):
    from hydra import compose, initialize_config_dir

    from fyc_train.cli.train import CONFIG_DIR, train

    meta = json.loads(next(iter(read_shards(latent_shards).values()))["json"])
    assert meta["latents"]["autoencoder"] == {"type": "pixel_unshuffle", "factor": 2, "scale": 1.0,
                                              "image_channels": 3}
    assert meta["latents"]["shape"] == [12, 8, 16, 16] and meta["latents"]["dtype"] == "float32"
    common = ["experiment=tiny", "data.num_workers=0", "data.batch_size=2", "data.num_frames=8",
              "trainer.max_steps=3", "trainer.log_every_n_steps=1", "trainer.limit_val_batches=0",
              "callbacks.samples=null", "logger=csv", "export.enabled=false", f"paths.output_dir={tmp_path}"]
    losses = {}
    for name, folder in (("video", selected), ("latents", latent_shards)):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[*common, f"run_name={name}", f"data.shards={folder}/shards"])
        train(cfg)
        metrics = pd.read_csv(next((tmp_path / name).rglob("metrics.csv")))
        losses[name] = metrics.dropna(subset=["train/loss"])[["step", "train/loss"]].to_numpy()
    assert len(losses["video"]) == 3
    np.testing.assert_allclose(losses["latents"], losses["video"], rtol=1e-5, atol=1e-7)

    # a model configured with another autoencoder refuses the latents, naming both
    env = {**os.environ, "FYC_OUTPUT_DIR": str(tmp_path), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = run([str(BIN / "fyc-train"), *common, "run_name=mismatch", f"data.shards={latent_shards}/shards",
                "model.autoencoder.scale=0.5"], env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "made by autoencoder [type=pixel_unshuffle, factor=2, image_channels=3, scale=1.0]" in proc.stderr
    assert "configured with autoencoder [type=pixel_unshuffle, factor=2, image_channels=3, scale=0.5]" in proc.stderr
    record_fault(
        "curation", "fyc-train on latent shards made by the pixel-unshuffle autoencoder (scale 1.0) with "
        "model.autoencoder.scale=0.5", "refused before training, naming both autoencoders",
        "exit 2: `the latent shards (...) were made by autoencoder [type=pixel_unshuffle, factor=2, image_channels=3, "
        "scale=1.0] but the model is configured with autoencoder [type=pixel_unshuffle, factor=2, image_channels=3, "
        "scale=0.5]: train with the autoencoder that made them, or re-make the latents with this one`",
        {"loss_steps_compared": len(losses["video"]), "max_abs_loss_diff":
         float(np.abs(losses["latents"][:, 1] - losses["video"][:, 1]).max())},
        "test_curate.py::test_training_on_latent_shards_matches_training_on_video_and_refuses_another_autoencoder")


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from preprocessing.curation.cli import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("curate", overrides=overrides)


def test_config_errors_name_the_key(tmp_path):
    from hydra.errors import ConfigCompositionException

    from preprocessing.config import ConfigError
    from preprocessing.curation.cli import quote_query
    from preprocessing.curation.config import validate

    src = tmp_path / "src"
    src.mkdir()
    (src / "manifest.parquet").write_bytes(b"")
    with pytest.raises(ConfigCompositionException, match="qeury"):
        _compose([f"input.dir={src}", "output.dir=o", "select.qeury=x"])
    cases = {
        "set exactly one of input.dir": [f"input.dir={src}", f"input.dirs=[{src}]", "output.dir=o"],
        "input.dirs=.*no manifest.parquet": [f"input.dirs=[{src},{tmp_path}]", "output.dir=o"],
        "output.dir=.*must differ": [f"input.dir={src}", f"output.dir={src}"],
        "balance.magnitude_bins=.*set both": [f"input.dir={src}", "output.dir=o", "balance.magnitude_bins=[0,1]"],
        "balance.magnitude_bins=.*increasing": [f"input.dir={src}", "output.dir=o", "balance.magnitude_bins=[1,1]",
                                                "balance.max_per_magnitude_bin=3"],
        "balance.max_per_prompt=0": [f"input.dir={src}", "output.dir=o", "balance.max_per_prompt=0"],
        "latents.vae_path=None": [f"input.dir={src}", "output.dir=o", "latents.enabled=true",
                                  "latents.autoencoder=sd_vae"],
        "latents.dtype='bfloat16'": [f"input.dir={src}", "output.dir=o", "latents.enabled=true",
                                     "latents.dtype=bfloat16"],
        "dedupe.max_distance=64": [f"input.dir={src}", "output.dir=o", "dedupe.max_distance=64"],
    }
    for message, overrides in cases.items():
        with pytest.raises(ConfigError, match=message):
            validate(_compose(overrides))
    # a pandas query as users type it becomes a quoted Hydra value
    assert quote_query("select.query=magnitude > 1") == "select.query='magnitude > 1'"
    assert quote_query("select.query=direction == 'left'") == "select.query=\"direction == 'left'\""
    assert _compose([f"input.dir={src}", "output.dir=o", quote_query("select.query=a > 1 and b == \"x\" or c == 'y'")
                     ]).select.query == "a > 1 and b == \"x\" or c == 'y'"
