"""fyc-train end to end on CPU: fast_dev_run over real fyc-preprocess shards; a real run with
W&B offline (metrics, sample video, checkpoint, export) and auto-resume on re-run; NaN/Inf steps
skipped, never checkpointed. Exact resume, SIGKILL, SIGTERM and 2-process DDP: test_resume_e2e.py.
The fault tests record what they injected and measured in the fault table (tests/fault_table.py)."""

from __future__ import annotations

import glob
import math
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from fault_table import record_fault
from hydra import compose, initialize_config_dir

from fyc_train.cli.train import CONFIG_DIR, train
from fyc_train.utils.synthetic_shards import write_shards

REPO = Path(__file__).resolve().parents[1]
TINY = ["experiment=tiny", "data.num_workers=0", "data.batch_size=2", "data.num_frames=8",
        "trainer.log_every_n_steps=1", "trainer.limit_val_batches=1", "data.val_batches=1",
       ]


def make(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


def train_env(tmp: Path) -> dict[str, str]:
    # tests/ on the path: injected callbacks (test_train_e2e.Pace) resolve in the subprocess too
    return {"WANDB_MODE": "offline", "FYC_OUTPUT_DIR": str(tmp), "PATH": str(Path(sys.executable).parent),
            "HOME": str(tmp), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "tests")}


FYC_TRAIN = str(Path(sys.executable).parent / "fyc-train")


def fyc_train(args: list[str], tmp: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([FYC_TRAIN, *args], cwd=REPO, env=train_env(tmp), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("train_shards")
    write_shards(folder, num_shards=2, per_shard=3, num_frames=8, size=32)
    return str(folder / "shard-*.tar")


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory, raft_small_path) -> Path:
    """Real fyc-preprocess output (MovingShapes clips, RAFT-small weights from the assets)."""
    from preprocessing.synthetic.moving_shapes import generate_corpus

    root = tmp_path_factory.mktemp("pre")
    manifest = generate_corpus(root / "shapes", 3, seed=1, height=128, width=128, num_frames=16, progress=False)
    out = root / "out"
    proc = subprocess.run([sys.executable, "-m", "preprocessing.cli", f"input.manifest={manifest}",
                           f"output.dir={out}", f"flow.weights={raft_small_path}", "clip.num_frames=8",
                           "clip.stride=1", "clip.size=[128,128]", "flow.size=128", "flow.num_updates=2",
                           "shard.max_samples=2", "ray.num_cpus=2"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert list((out / "shards").glob("*.tar")), "fyc-preprocess wrote no shard"
    return out / "shards"


@pytest.mark.slow
def test_fast_dev_run_on_fyc_preprocess_shards(preprocessed, tmp_path):
    cfg = make([*TINY, f"data.shards={preprocessed}", "data.resolution=[32,32]", "trainer.fast_dev_run=true",
                "logger=none", f"paths.output_dir={tmp_path}"])
    train(cfg)  # raises on any failure; fast_dev_run runs one train and one val batch


@pytest.mark.slow
def test_wandb_offline_run_then_rerun_auto_resumes(shards, tmp_path):
    args = [*TINY, f"data.shards={shards}", "data.steps_per_epoch=2", "checkpoint_every_n_steps=2",
            "callbacks.samples.steps=2", "run_name=wb"]
    first = fyc_train([*args, "trainer.max_steps=2"], tmp_path)
    assert first.returncode == 0, first.stderr[-4000:]
    run = tmp_path / "wb"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    assert ckpt["fyc"]["magnitude_quantiles"]["0.5"] > 0 and ckpt["fyc"]["layout"]["channel_order"]
    assert any("EMACallback" in k for k in ckpt["callbacks"])  # EMA shadow weights travel with it
    assert list((run / "samples").glob("step-*/*.mp4")), "no sample video in the run directory"
    assert (run / "export" / "unet" / "config.json").is_file()
    wandb_runs = glob.glob(str(run / "wandb" / "offline-run-*"))
    assert len(wandb_runs) == 1
    record = Path(glob.glob(f"{wandb_runs[0]}/run-*.wandb")[0]).read_bytes()
    for metric in (b"train/loss", b"val/loss", b"train/grad_norm", b"train/samples_per_s",
                   b"data/skipped_samples", b"lr-AdamW"):
        assert metric in record, metric
    assert glob.glob(f"{wandb_runs[0]}/files/media/videos/**/*.mp4", recursive=True), "no video logged to W&B"

    second = fyc_train([*args, "trainer.max_steps=4"], tmp_path)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resuming from" in second.stdout + second.stderr
    assert "rank 0 finished at step 4" in second.stdout
    run_ids = {Path(p).name.rsplit("-", 1)[1] for p in glob.glob(str(run / "wandb" / "offline-run-*"))}
    assert len(run_ids) == 1  # the same W&B run id continued
    resumed = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 4
    record_fault(
        "training", "fyc-train stopped after 2 steps, then the same command re-run with trainer.max_steps=4 "
                    "(W&B offline)",
        "auto-resume from <run_dir>/checkpoints/last.ckpt; the same W&B run continues; W&B offline never "
        "touches the network",
        "the re-run logged `resuming from .../last.ckpt`, finished at step 4, one W&B offline run id",
        {"first_run_step": ckpt["global_step"], "final_step": resumed["global_step"], "wandb_run_ids": len(run_ids)},
        "test_train_e2e.py::test_wandb_offline_run_then_rerun_auto_resumes")


class PoisonBatches(pl.Callback):
    """Fault injection: NaN video in the batches of the given steps (as a corrupt decode would)."""

    def __init__(self, steps: list[int]) -> None:
        self.steps = set(steps)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step in self.steps or -1 in self.steps:
            batch["video"][:] = float("nan")


@pytest.mark.slow
def test_non_finite_loss_skips_the_step_and_never_reaches_a_checkpoint(shards, tmp_path):
    common = [*TINY, f"data.shards={shards}", "data.steps_per_epoch=3", "checkpoint_every_n_steps=3",
              "callbacks.samples=null", "logger=none", "export.enabled=false", f"paths.output_dir={tmp_path}"]
    # one poisoned step: skipped, counted, training goes on, checkpoint finite
    train(make([*common, "run_name=once", "trainer.max_steps=3", "+callbacks.poison._target_=test_train_e2e.PoisonBatches",
                "+callbacks.poison.steps=[1]"]))
    ckpt = torch.load(tmp_path / "once/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert ckpt["fyc"]["nonfinite_steps"] == 1
    # every step poisoned: the run stops with a message after max_consecutive, writes nothing
    from fyc_train.callbacks.nan_guard import NonFiniteError

    with pytest.raises(NonFiniteError, match="consecutive steps with a non-finite loss"):
        train(make([*common, "run_name=always", "trainer.max_steps=6", "callbacks.nan_guard.max_consecutive=2",
                    "+callbacks.poison._target_=test_train_e2e.PoisonBatches", "+callbacks.poison.steps=[-1]"]))
    assert not list((tmp_path / "always").glob("checkpoints/*.ckpt"))
    record_fault(
        "training", "NaN video fed into the batch of step 1 of 3; then into every batch "
                    "(callbacks.nan_guard.max_consecutive=2)",
        "a non-finite loss is detected, the step skipped (or the run stopped with a message); no checkpoint with "
        "non-finite weights",
        "one bad step: skipped and counted, the run finished with finite weights; every step bad: NonFiniteError "
        "`consecutive steps with a non-finite loss`, no checkpoint written",
        {"nonfinite_steps_counted": ckpt["fyc"]["nonfinite_steps"], "checkpoints_when_always_nan": 0},
        "test_train_e2e.py::test_non_finite_loss_skips_the_step_and_never_reaches_a_checkpoint")


@pytest.mark.slow
def test_optuna_sweep_runs_trials_and_reports_the_best(shards, tmp_path):
    """`fyc-train -m hparams_search=optuna_lr`: trials that stop (max_steps) before their first
    validation still report val/loss, so Optuna can rank them."""
    proc = fyc_train([*TINY, f"data.shards={shards}", "hparams_search=optuna_lr", "trainer.max_steps=1",
                      "data.steps_per_epoch=4", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=1",
                      "callbacks=minimal", "logger=none", "export.enabled=false", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                     tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    results = (tmp_path / "sweep" / "optimization_results.yaml").read_text()
    best = float(results.split("best_value:")[1].split()[0])
    assert math.isfinite(best) and best > 0, results
    assert proc.stdout.count("rank 0 finished at step 1") == 2
