"""Bad configuration: an invalid value in every config group of fyc-preprocess, fyc-train and
fyc-sample is rejected before any heavy work (no Ray, no data scan, no model load), with a message
naming the key and the allowed values. Configs are composed in-process with Hydra's compose API
(the same composition the CLIs do); one subprocess per CLI checks the exit code end to end."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_table import record_fault
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException
from fyc_conf import config_dir

REPO = Path(__file__).resolve().parents[1]
_RESULTS: dict[str, list[str]] = {"fyc-preprocess": [], "fyc-train": [], "fyc-sample": []}


def _compose(config: str, overrides: list[str]):
    with initialize_config_dir(config_dir=config_dir(config), version_base="1.3"):
        return compose(config, overrides=overrides)


def _rejection(fn) -> str:
    """Run the config path; return the error message (the test fails if nothing was rejected)."""
    try:
        fn()
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    pytest.fail("the invalid config was accepted")


# ---------------------------------------------------------------- fyc-preprocess

PREPROCESS_CASES = [  # (group, override, needles that must all appear in the error)
    ("input", "input.format=xml", ["input.format", "csv, jsonl, parquet"]),
    ("input", "input.allowed_schemes=[http,ftp]", ["input.allowed_schemes", "http, https"]),
    ("input", "input.fetch_timeout_s=0", ["input.fetch_timeout_s", "> 0"]),
    ("input", "input.manifset=x.csv", ["manifset"]),
    ("output", "output.dir=''", ["output.dir"]),
    ("clip", "clip.size=[100,128]", ["clip.size", "divisible by 8"]),
    ("clip", "clip.num_frames=1", ["clip.num_frames", "at least 2"]),
    ("flow", "flow.model=raft_huge", ["flow.model", "raft_small, raft_large"]),
    ("flow", "flow.mask=fancy", ["flow.mask", "robust, paper"]),
    ("flow", "flow.mask_region=last", ["flow.mask_region", "union, first"]),
    ("flow", "flow.size=64", ["flow.size", ">= 128"]),
    ("flow", "flow.weights=/nonexistent/raft.pth", ["flow.weights", "existing checkpoint"]),
    ("flow", "flow.modle=raft_small", ["modle"]),
    ("flow", "flow.core_fraction=1.0", ["flow.core_fraction", "[0, 1)"]),
    ("prompt", "prompt.extractor=gpt", ["prompt.extractor", "builtin, llm"]),
    ("prompt", "prompt.llm.url=ftp://x", ["prompt.llm.url", "http(s)"], ),
    ("filter", "filter.min_magnitude=-1", ["filter.min_magnitude", ">= 0"]),
    ("filter", "filter.max_magnitude=0.5", ["filter.max_magnitude", ">= filter.min_magnitude"]),
    ("shard", "shard.max_samples=0", ["shard.max_samples", "> 0"]),
    ("decode", "decode.timeout_s=0", ["decode.timeout_s", "> 0"]),
    ("ray", "ray.flow_actors=0", ["ray.flow_actors", "> 0"]),
    ("ray", "ray.flow_threads=0", ["ray.flow_threads", "> 0"]),
    ("ray", "ray.flow_gpus_per_actor=-1", ["ray.flow_gpus_per_actor", ">= 0"]),
    ("top level", "limit=0", ["limit", "positive"]),
    ("top level", "retry_errors=maybe", ["retry_errors", "maybe"]),
]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "m.csv"
    path.write_text("video,caption\na.mp4,a dog runs\n")
    return path


@pytest.mark.parametrize("group, override, needles", PREPROCESS_CASES, ids=[c[1] for c in PREPROCESS_CASES])
def test_preprocess_rejects_invalid_values_in_every_group(manifest, tmp_path, group, override, needles):
    import preprocessing.cli  # noqa: F401 - registers the structured schema, as the CLI does
    from preprocessing.config import validate

    base = [f"input.manifest={manifest}", f"output.dir={tmp_path / 'out'}"]
    if override.startswith("prompt.llm"):
        base.append("prompt.extractor=llm")
    if override.startswith("filter.max"):
        base.append("filter.min_magnitude=1.0")
    message = _rejection(lambda: validate(_compose("preprocess", [*base, override])))
    for needle in needles:
        assert needle in message, message
    assert not (tmp_path / "out").exists()
    _RESULTS["fyc-preprocess"].append(group)


def test_preprocess_cli_exits_2_before_any_work(manifest, tmp_path):
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "preprocessing.cli", f"input.manifest={manifest}",
                           f"output.dir={tmp_path / 'out'}", "flow.model=raft_huge"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    wall = time.perf_counter() - began
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "flow.model='raft_huge' is invalid: allowed values are raft_small, raft_large" in proc.stdout + proc.stderr
    assert not (tmp_path / "out" / "shards").exists() and "Ray" not in proc.stdout + proc.stderr
    groups = sorted(set(_RESULTS["fyc-preprocess"]))
    record_fault(
        "configuration", f"fyc-preprocess: {len(PREPROCESS_CASES)} invalid values / typo'd keys across groups "
                         f"{', '.join(groups)}",
        "rejected before any heavy work, naming the key and the allowed values",
        "every one rejected at composition/validation (no Ray start, no output written); the CLI exits 2 with "
        "e.g. `flow.model='raft_huge' is invalid: allowed values are raft_small, raft_large`",
        {"cases": len(PREPROCESS_CASES), "groups": len(groups), "cli_reject_s": round(wall, 1)},
        "test_faults_config.py::test_preprocess_*")


# ---------------------------------------------------------------- fyc-train

TRAIN_CASES = [  # (group, override, needles)
    ("model", "model.trainable=everything", ["model.trainable"]),
    ("model", "+model.fyc.motion_augmnt=true", ["model.fyc.motion_augmnt", "motion_augment"]),
    ("data", "data.batch_size=0", ["data.batch_size=0", ">= 1"]),
    ("data", "data.shards=/nonexistent/shard-*.tar", ["data.shards", "matches no file"]),
    ("trainer", "trainer.precision=17", ["trainer.precision=17", "bf16-mixed"]),
    ("trainer", "trainer=tpu", ["trainer", "tpu", "ddp"]),
    ("logger", "logger.wandb.mode=cloud", ["logger.wandb.mode='cloud'", "offline"]),
    ("logger", "logger=tensorboard", ["logger", "tensorboard", "wandb"]),
    ("callbacks", "+callbacks.ema.decai=0.9", ["callbacks.ema.decai", "decay"]),
    ("callbacks", "callbacks=everything", ["callbacks", "everything", "minimal"]),
    ("experiment", "experiment=stage3_1024", ["experiment", "stage3_1024", "stage1_256"]),
    ("paths", "paths=cluster", ["paths", "cluster", "default"]),
    ("paths", "+paths.chekpoint_dir=/x", ["paths.chekpoint_dir", "did you mean 'checkpoint_dir'", "allowed keys"]),
    ("export", "+export.use_emma=false", ["export.use_emma", "use_ema", "allowed keys"]),
    ("callbacks", "+callbacks.ema_decay=0.9", ["callbacks.ema_decay", "_target_"]),
    ("module", "module.prediction_type=sample", ["module.prediction_type='sample'", "v_prediction"]),
    ("top level", "+learning_rate=1", ["learning_rate", "allowed keys"]),
]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    from fyc_train.utils.synthetic_shards import write_shards

    folder = tmp_path_factory.mktemp("shards")
    write_shards(folder, num_shards=1, per_shard=2, num_frames=4, size=32)
    return str(folder / "shard-*.tar")


@pytest.mark.parametrize("group, override, needles", TRAIN_CASES, ids=[c[1] for c in TRAIN_CASES])
def test_train_rejects_invalid_values_in_every_group(shards, tmp_path, group, override, needles):
    import fyc_train.cli.train  # noqa: F401 - registers its resolvers, as the CLI does
    from fyc_train.config_validation import validate_config

    base = ["experiment=tiny", f"paths.output_dir={tmp_path}"]
    if not override.startswith("data.shards"):
        base.append(f"data.shards={shards}")
    message = _rejection(lambda: validate_config(_compose("train", [*base, override])))
    for needle in needles:
        assert needle in message, message
    assert not (tmp_path / "tiny").exists()  # nothing created
    _RESULTS["fyc-train"].append(group)


def test_train_cli_validate_only_exits_2_before_any_work(shards, tmp_path):
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fyc_train.cli.train", f"data.shards={shards}",
                           f"paths.output_dir={tmp_path}", "trainer.precision=17", "validate_only_config=true"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - began
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "trainer.precision=17" in proc.stderr + proc.stdout
    assert not list(tmp_path.rglob("*.ckpt"))
    groups = sorted(set(_RESULTS["fyc-train"]))
    record_fault(
        "configuration", f"fyc-train: {len(TRAIN_CASES)} invalid values, typo'd keys and unknown group options "
                         f"across groups {', '.join(groups)}",
        "rejected before any heavy work, naming the key and the allowed values",
        "every one rejected by Hydra composition or fyc_train.config_validation before data/model work; the CLI "
        "exits 2", {"cases": len(TRAIN_CASES), "groups": len(groups), "cli_reject_s": round(wall, 1)},
        "test_faults_config.py::test_train_*")


# ---------------------------------------------------------------- fyc-sample

@pytest.fixture(scope="module")
def sample_inputs(tmp_path_factory) -> dict[str, str]:
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("sample")
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(folder / "in.png")
    export = folder / "export"  # a folder that is not an exported model: checked before loading
    export.mkdir()
    ckpt = folder / "model.ckpt"
    ckpt.write_bytes(b"not loaded by validation")
    return {"image": str(folder / "in.png"), "ckpt": str(ckpt), "out": str(folder / "o.mp4")}


SAMPLE_CASES = [  # (key, override, needles)
    ("speed", "speed=warp", ["speed=warp", "slow, medium or fast"]),
    ("steps", "steps=0", ["steps"]),
    ("num_frames", "num_frames=-2", ["num_frames"]),
    ("click", "click=[500,5]", ["outside"]),
    ("labels", "clicks=[[3,3],[4,4]] labels=[1,7]", ["labels"]),
    ("output", "output=o.avi", ["output", ".mp4"]),
    ("checkpoint", "checkpoint=/nonexistent.ckpt", ["no such file", "/nonexistent.ckpt"]),
    ("image", "image=/nonexistent.png", ["no such file", "/nonexistent.png"]),
    ("device", "device=tpu", ["device=tpu", "auto, cpu, cuda, cuda:N"]),
    ("dtype", "dtype=float8", ["dtype=float8", "float32, float16, bfloat16"]),
    ("click_mode", "click_mode=sideways", ["click_mode=sideways", "object, per_click"]),
    ("fps", "fps=0", ["fps=0", "> 0"]),
    ("guidance", "guidance=-3", ["guidance=-3", ">= 1.0"]),
    ("guidance", "guidance=0.5", ["guidance=0.5", ">= 1.0"]),
    ("guidance_rescale", "guidance_rescale=2", ["guidance_rescale=2", "[0, 1]"]),
    ("device", "device=cuda:x", ["device=cuda:x", "cuda:N"]),
    ("fps", "fps=fast", ["fps='fast'", "number"]),
]


def _sample_overrides(inputs: dict[str, str], override: str) -> list[str]:
    base = {"checkpoint": inputs["ckpt"], "image": inputs["image"], "prompt": "slide left", "box": "[2,2,20,20]",
            "output": inputs["out"]}
    extra = override.split(" ")
    for item in extra:
        key = item.split("=")[0]
        base.pop(key, None)
        if key in ("click", "clicks"):
            base.pop("box", None)
    return [f"{k}={v}" for k, v in base.items()] + extra


@pytest.mark.parametrize("key, override, needles", SAMPLE_CASES, ids=[c[1] for c in SAMPLE_CASES])
def test_sample_rejects_invalid_values_before_loading_the_model(sample_inputs, key, override, needles):
    from fyc_train.cli.sample import CONFIG_DIR, build_request

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("sample", overrides=_sample_overrides(sample_inputs, override))
    message = _rejection(lambda: build_request(cfg))
    for needle in needles:
        assert needle in message, message
    _RESULTS["fyc-sample"].append(key)


def test_sample_cli_exits_2_before_loading(sample_inputs, tmp_path):
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fyc_train.cli.sample",
                           *_sample_overrides(sample_inputs, "dtype=float8")], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    wall = time.perf_counter() - began
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "dtype=float8: allowed values are float32, float16, bfloat16" in proc.stdout + proc.stderr
    checked = sorted(set(_RESULTS["fyc-sample"]))
    record_fault(
        "configuration", f"fyc-sample: {len(SAMPLE_CASES)} invalid values ({', '.join(sorted({c[0] for c in SAMPLE_CASES}))})",
        "rejected before the model is loaded, naming the key and the allowed values",
        f"{len(checked)} keys rejected before loading ({', '.join(checked)}); the CLI exits 2 with e.g. "
        "`dtype=float8: allowed values are float32, float16, bfloat16`",
        {"cases": len(SAMPLE_CASES), "keys_rejected_before_load": len(checked), "cli_reject_s": round(wall, 1)},
        "test_faults_config.py::test_sample_*")
