"""Exact resume at any step, and preemption, through fyc-train on CPU.

- mid-epoch resume with 2 loader workers == an uninterrupted run (weights and EMA bit for bit),
  and the resumed stream continues the data order instead of starting it again;
- the real command SIGKILLed mid-epoch, re-run: the same weights as never killing it;
- 2-process DDP (gloo): the ranks read different samples and hold the same weights; SIGTERM to
  rank 0 mid-epoch makes every rank checkpoint at the same step and exit 75; the re-run ends with
  the weights of an uninterrupted DDP run.
Each records its fault-table row after its assertions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from fault_table import record_fault
from hydra import compose, initialize_config_dir

from fyc_train.cli.train import CONFIG_DIR, train
from fyc_train.utils.synthetic_shards import write_shards

REPO = Path(__file__).resolve().parents[1]
FYC_TRAIN = str(Path(sys.executable).parent / "fyc-train")
BASE = ["experiment=tiny", "data.batch_size=2", "data.num_frames=4", "data.num_workers=2",
        "trainer.limit_val_batches=1", "data.val_batches=1", "callbacks.samples=null", "logger=none",
        "export.enabled=false", "trainer.enable_progress_bar=false", "+callbacks.keylog._target_=test_resume_e2e.KeyLog",
        "+callbacks.keylog.path=${paths.run_dir}/keys.jsonl"]


class KeyLog(pl.Callback):
    """Test probe: one json line per rank and step: the sample keys of the batch and a checksum
    of the trainable weights after the step (appended, so a resumed run continues the file)."""

    def __init__(self, path: str, pace_s: float = 0.0) -> None:
        self.path, self.pace_s = path, pace_s

    def _write(self, line: dict) -> None:
        with open(self.path, "a") as sink:
            sink.write(json.dumps(line) + "\n")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # keys before the step: the step a preemption ends still shows what it read
        self._write({"step": trainer.global_step + 1, "rank": trainer.global_rank, "keys": list(batch["key"])})
        time.sleep(self.pace_s)  # lets a signal land between steps in the fault tests

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        checksum = float(sum(p.detach().double().sum() for p in pl_module.trainable_parameters()))
        self._write({"step": trainer.global_step, "rank": trainer.global_rank, "weights": checksum})


def read_keys(run: Path) -> dict[tuple[int, int], dict]:
    """(step, rank) -> {keys, weights}; a step logged twice (re-run) keeps the last."""
    merged: dict[tuple[int, int], dict] = {}
    for line in (run / "keys.jsonl").read_text().splitlines():
        x = json.loads(line)
        merged.setdefault((x["step"], x["rank"]), {}).update(x)
    return merged


def make(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides)


def env(tmp: Path) -> dict[str, str]:
    return {"FYC_OUTPUT_DIR": str(tmp), "PATH": str(Path(sys.executable).parent), "HOME": str(tmp),
            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "tests")}


def fyc_train(args: list[str], tmp: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([FYC_TRAIN, *args], cwd=REPO, env=env(tmp), capture_output=True, text=True, timeout=timeout)


def checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def assert_same_training_state(a: dict, b: dict) -> tuple[int, int]:
    """Every weight and every EMA shadow tensor bit-identical; returns their counts."""
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    ema = next(k for k in a["callbacks"] if "EMACallback" in k)
    shadows = list(zip(a["callbacks"][ema]["shadow_params"], b["callbacks"][ema]["shadow_params"]))
    assert shadows and all(torch.equal(x, y) for x, y in shadows)
    return len(a["state_dict"]), len(shadows)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("resume_shards")
    write_shards(folder, num_shards=5, per_shard=4, num_frames=4, size=32)  # 16 training samples
    return str(folder / "shard-*.tar")


@pytest.mark.slow
def test_mid_epoch_resume_with_workers_equals_uninterrupted(shards, tmp_path):
    """Stop at step 2 of a 3-step epoch (2 loader workers), resume to 5 (across the epoch end)."""
    common = [*BASE, f"data.shards={shards}", "data.steps_per_epoch=3", "checkpoint_every_n_steps=2",
              f"paths.output_dir={tmp_path}"]
    train(make([*common, "run_name=split", "trainer.max_steps=2"]))
    train(make([*common, "run_name=split", "trainer.max_steps=5"]))
    train(make([*common, "run_name=whole", "trainer.max_steps=5"]))
    split, whole = checkpoint(tmp_path / "split"), checkpoint(tmp_path / "whole")
    assert whole["global_step"] == 5 and whole["FYCDataModule"]["consumed_batches"] == 5
    tensors, shadows = assert_same_training_state(split, whole)
    # the data order went on where it stopped (a restarted stream would repeat step 1's samples)
    split_keys, whole_keys = read_keys(tmp_path / "split"), read_keys(tmp_path / "whole")
    assert [split_keys[(s, 0)]["keys"] for s in range(1, 6)] == [whole_keys[(s, 0)]["keys"] for s in range(1, 6)]
    assert split_keys[(3, 0)]["keys"] != whole_keys[(1, 0)]["keys"]
    seen = [k for s in range(1, 6) for k in whole_keys[(s, 0)]["keys"]]
    assert len(set(seen)) == 10  # within one pass over 16 samples: no repeats
    record_fault(
        "training", "run stopped mid-epoch (step 2 of a 3-step epoch, data.num_workers=2) and resumed to step 5, "
                    "against an uninterrupted 5-step run",
        "resume is exact at any step: same weights, same EMA weights, the same samples at every step",
        "every weight and EMA shadow tensor bit-identical (torch.equal); the resumed run's batches at steps 3-5 "
        "are the uninterrupted run's (the data position travels in the checkpoint)",
        {"steps": 5, "weight_tensors_equal": tensors, "ema_tensors_equal": shadows, "loader_workers": 2},
        "test_resume_e2e.py::test_mid_epoch_resume_with_workers_equals_uninterrupted")


def wait_for(condition, proc: subprocess.Popen, log: Path, what: str, timeout: float = 600) -> None:
    began = time.perf_counter()
    while not condition():
        assert proc.poll() is None, f"fyc-train ended before {what}: {log.read_text()[-3000:]}"
        assert time.perf_counter() - began < timeout, f"no {what} within {timeout} s"
        time.sleep(0.05)


def steps_logged(run: Path, rank: int = 0) -> int:
    path = run / "keys.jsonl"
    if not path.exists():
        return 0
    return sum(1 for s in path.read_text().splitlines()
               if s.endswith("}") and '"weights"' in s and json.loads(s)["rank"] == rank)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_same_command_equals_uninterrupted(shards, tmp_path):
    max_steps = 6
    args = [*BASE, f"data.shards={shards}", "data.steps_per_epoch=4", "checkpoint_every_n_steps=2",
            f"trainer.max_steps={max_steps}"]
    paced = [*args, "+callbacks.keylog.pace_s=0.5", "run_name=killed"]
    run = tmp_path / "killed"
    log = tmp_path / "killed.log"  # a file, not a pipe: a full pipe would stall the run
    with log.open("w") as sink:
        proc = subprocess.Popen([FYC_TRAIN, *paced], cwd=REPO, env=env(tmp_path), stdout=sink,
                                stderr=sink)
    try:
        wait_for(lambda: (run / "checkpoints" / "last.ckpt").exists() and steps_logged(run) >= 3, proc, log,
                 "the step after the first checkpoint")
        os.kill(proc.pid, signal.SIGKILL)  # mid-step 4 or 5: after the step-2 checkpoint, mid-epoch
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = checkpoint(run)["global_step"]
    assert 0 < killed_at < max_steps and killed_at % 4 != 0  # mid-epoch
    rerun = fyc_train(paced, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "resuming from" in rerun.stdout + rerun.stderr
    whole = fyc_train([*args, "run_name=whole"], tmp_path)
    assert whole.returncode == 0, whole.stderr[-4000:]
    tensors, shadows = assert_same_training_state(checkpoint(run), checkpoint(tmp_path / "whole"))
    assert checkpoint(run)["global_step"] == max_steps
    record_fault(
        "training", f"the real fyc-train command SIGKILLed mid-epoch (after its step-{killed_at} checkpoint, "
                    f"data.num_workers=2), then the same command re-run to step {max_steps}",
        "auto-resume from last.ckpt; the final weights and EMA weights are those of a run never killed",
        f"the re-run resumed from step {killed_at}; all {tensors} weight tensors and {shadows} EMA tensors "
        "bit-identical to an uninterrupted run of the same command",
        {"killed_after_checkpoint_step": killed_at, "final_step": max_steps, "weight_tensors_equal": tensors,
         "ema_tensors_equal": shadows},
        "test_resume_e2e.py::test_sigkill_mid_epoch_then_same_command_equals_uninterrupted")


@pytest.mark.slow
def test_ddp_ranks_read_different_samples_and_sigterm_resumes_exactly(shards, tmp_path):
    """2 ranks x 2 loader workers, 3-step epochs, 5 steps; SIGTERM to rank 0 mid-run."""
    max_steps = 5
    args = [*BASE, f"data.shards={shards}", "trainer=ddp_cpu", "data.steps_per_epoch=3", "checkpoint_every_n_steps=100",
            f"trainer.max_steps={max_steps}"]
    run = tmp_path / "preempted"
    log = tmp_path / "preempted.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([FYC_TRAIN, *args, "run_name=preempted", "+callbacks.keylog.pace_s=0.5"], cwd=REPO,
                                env=env(tmp_path), stdout=sink, stderr=sink)
    try:
        wait_for(lambda: steps_logged(run) >= 1, proc, log, "the first step")
        proc.send_signal(signal.SIGTERM)  # rank 0 only: rank 1 learns it through the per-step all-reduce
        proc.wait(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    output = log.read_text()
    assert proc.returncode == 75, output[-4000:]
    began = time.perf_counter()  # rank 1 runs on for its last lines
    while "rank 1 preempted" not in output and time.perf_counter() - began < 60:
        time.sleep(0.2)
        output = log.read_text()
    stopped = checkpoint(run)["global_step"]
    assert 0 < stopped < max_steps, output[-3000:]
    for rank in (0, 1):
        assert f"rank {rank} preempted by" in output and f"at step {stopped};" in output, output[-3000:]
    rerun = fyc_train([*args, "run_name=preempted"], tmp_path)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-4000:]
    assert "rank 0 finished at step 5" in rerun.stdout and "rank 1 finished at step 5" in rerun.stdout
    whole = fyc_train([*args, "run_name=whole"], tmp_path)
    assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr[-4000:]
    tensors, shadows = assert_same_training_state(checkpoint(run), checkpoint(tmp_path / "whole"))

    resumed, reference = read_keys(run), read_keys(tmp_path / "whole")
    for step in range(1, max_steps + 1):
        # the ranks of a step read different samples, and the preempted + resumed run read what the
        # uninterrupted one read, rank by rank
        assert not set(reference[(step, 0)]["keys"]) & set(reference[(step, 1)]["keys"]), step
        for rank in (0, 1):
            assert resumed[(step, rank)]["keys"] == reference[(step, rank)]["keys"], (step, rank)
    # DDP keeps the ranks' weights equal (each rank's own copy, checked after every step)
    assert all(reference[(s, 0)]["weights"] == reference[(s, 1)]["weights"] for s in range(1, max_steps + 1))
    record_fault(
        "training", f"2-process DDP (gloo, 2 loader workers each) sent SIGTERM on rank 0 mid-epoch of a "
                    f"{max_steps}-step run, then the same command re-run",
        "every rank checkpoints at the same step boundary and exits 75; the re-run continues exactly; ranks read "
        "different samples and hold the same weights",
        f"both ranks stopped after step {stopped} (one checkpoint, exit 75); the re-run finished at step "
        f"{max_steps} with every weight and EMA tensor bit-identical to an uninterrupted DDP run; at every step the "
        "ranks' samples were disjoint and their weights equal",
        {"stopped_at_step": stopped, "exit_code": proc.returncode, "weight_tensors_equal": tensors,
         "ema_tensors_equal": shadows},
        "test_resume_e2e.py::test_ddp_ranks_read_different_samples_and_sigterm_resumes_exactly")
