"""fyc-train configs: every group composes; typos and invalid values are rejected before any
heavy work, with a message naming the key and the allowed keys/values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from fyc_train.cli.train import CONFIG_DIR
from fyc_train.config_validation import ConfigError, validate_config
from fyc_train.utils.synthetic_shards import write_shards

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("shards")
    write_shards(folder, num_shards=2, per_shard=2, num_frames=8, size=32)
    return str(folder / "shard-*.tar")


def make(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


def test_default_and_tiny_configs_validate(shards, tmp_path):
    plain = validate_config(make([f"data.shards={shards}", "experiment=tiny", f"paths.output_dir={tmp_path}"]))
    assert plain["run_name"] == "tiny" and plain["paths"]["run_dir"] == f"{tmp_path}/tiny"
    assert len(plain["logger"]["wandb"]["id"]) == 12  # stable id from the pinned run dir
    assert plain["module"]["prediction_type"] == "v_prediction" and plain["module"]["zero_terminal_snr"]


@pytest.mark.parametrize("experiment", ["stage1_256", "stage1_512", "stage2_256", "stage2_512", "moving_shapes",
                                        "moving_shapes_blend"])
def test_experiments_compose_with_valid_keys(experiment, shards):
    overrides = [f"experiment={experiment}", f"data.shards={shards}"]
    if experiment.startswith("stage"):
        overrides += ["model.pretrained_path=/models/sd15", "model.motion_adapter_path=/models/adapter"]
    if experiment.startswith("stage2") or experiment == "moving_shapes_blend":
        overrides.append("module.init_from=/runs/stage1/last.ckpt")
    plain = validate_config(make(overrides), check_data=False)
    if experiment.startswith("stage"):
        assert plain["model"]["fyc"]["motion_augment"] is experiment.startswith("stage2")
        assert plain["data"]["resolution"] == [int(experiment[-3:])] * 2
    if experiment == "moving_shapes_blend":  # stage 2 keeps stage 1's recipe and adds the gate
        assert plain["model"]["fyc"]["first_frame_skip"] == "blend_all"
        assert plain["model"]["fyc"]["frame_noise_correlation"] == 0.9 and plain["data"]["batch_size"] == 8
        assert plain["module"]["copy_gate_loss_weight"] > 0  # the gate has a target of its own (module.copy_gate_loss_weight)


@pytest.mark.parametrize("override, needles", [
    ("+data.batchsize=3", ["data.batchsize", "did you mean 'batch_size'"]),
    ("+module.lr_shedule=cosine", ["module.lr_shedule", "lr_schedule"]),
    ("+callbacks.ema.decai=0.9", ["callbacks.ema.decai", "decay"]),
    ("+trainer.max_step=3", ["trainer.max_step", "max_steps"]),
    ("+model.fyc.motion_augmnt=true", ["model.fyc.motion_augmnt", "motion_augment"]),
    ("+learning_rate=1", ["learning_rate", "allowed keys"]),
    ("module.prediction_type=sample", ["module.prediction_type='sample'", "v_prediction", "epsilon"]),
    ("module.beta_schedule=cosine", ["module.beta_schedule", "scaled_linear"]),
    ("module.lr_schedule=exp", ["module.lr_schedule", "constant_with_warmup"]),
    ("module.lr_schedule_steps=0", ["module.lr_schedule_steps", "must be > 0"]),
    ("module.mask_resize=bilinear", ["module.mask_resize", "nearest"]),
    ("module.caption_dropout=1.5", ["module.caption_dropout=1.5", "[0, 1]"]),
    ("module.first_frame_mask_ratio=[0.3,1.2]", ["module.first_frame_mask_ratio"]),
    ("module.lr=0", ["module.lr=0"]),
    ("data.batch_size=0", ["data.batch_size=0", ">= 1"]),
    ("data.num_workers=two", ["data.num_workers='two'", "number"]),
    ("data.resolution=[33,32]", ["data.resolution", "33x32", "factor 2"]),
    ("data.resolution=[32]", ["data.resolution"]),
    ("logger.wandb.mode=cloud", ["logger.wandb.mode='cloud'", "offline"]),
    ("model.trainable=everything", ["model.trainable"]),
    ("trainer.precision=17", ["trainer.precision=17", "bf16-mixed"]),
    ("data.shards=/nonexistent/shard-*.tar", ["data.shards", "/nonexistent/shard-*.tar", "matches no file"]),
    ("data.val_shards=/nonexistent/val.tar", ["data.val_shards", "/nonexistent/val.tar"]),
])
def test_invalid_values_are_rejected_naming_the_key(shards, override, needles):
    overrides = [f"data.shards={shards}", "experiment=tiny"]
    if override.startswith("data.shards="):
        overrides = ["experiment=tiny"]
    with pytest.raises(ConfigError) as info:
        validate_config(make([*overrides, override]))
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_missing_shards_names_the_key():
    with pytest.raises(ConfigError, match="data.shards"):
        validate_config(make([]))


def test_clip_size_from_the_shards_is_checked_against_the_autoencoder(tmp_path):
    write_shards(tmp_path, num_shards=1, per_shard=1, num_frames=4, size=30)
    with pytest.raises(ConfigError, match=r"30x30 is not divisible by the autoencoder's downscale factor 4"):
        validate_config(make([f"data.shards={tmp_path}/shard-*.tar", "model.autoencoder.factor=4"]))


def test_cli_rejects_a_typo_with_exit_code_2_before_training(shards, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fyc_train.cli.train", f"data.shards={shards}",
                           f"paths.output_dir={tmp_path}", "+data.shuffle_bufer=3"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "data.shuffle_bufer" in proc.stderr and "shuffle_buffer" in proc.stderr
    assert not (tmp_path / "fyc" / "checkpoints").exists()
