"""The cluster launchers, each run for real on this CPU with 2 processes (gloo): jobs/torchrun.sh
and jobs/ray_train.py (Ray Train TorchTrainer on a local Ray with 2 CPU workers). Each trains
2 steps, checkpoints, and the same command with more steps resumes from that checkpoint."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from fyc_train.utils.synthetic_shards import write_shards

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = ["experiment=tiny", "data.num_workers=0", "data.batch_size=2", "data.steps_per_epoch=2", "data.val_batches=1",
        "trainer.limit_val_batches=1", "callbacks=minimal", "logger=none", "export.enabled=false",
        "checkpoint_every_n_steps=2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_twice(command: list[str], env: dict[str, str], run_dir: Path, timeout: int = 900) -> list[str]:
    """2 steps, then the same command with trainer.max_steps=4; returns both outputs."""
    outputs = []
    for steps in (2, 4):
        proc = subprocess.run([*command, f"trainer.max_steps={steps}"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=timeout)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-5000:]
        ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        assert ckpt["global_step"] == steps
        outputs.append(out)
    assert "resuming from" not in outputs[0] and f"{run_dir}/checkpoints/last.ckpt" in outputs[1]
    return outputs


@pytest.fixture()
def shards(tmp_path) -> str:
    write_shards(tmp_path / "shards", num_shards=2, per_shard=4, num_frames=8, size=32)
    return f"data.shards={tmp_path}/shards/shard-*.tar"


def base_env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "FYC_OUTPUT_DIR": str(tmp_path / "out"),
            "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


@pytest.mark.slow
def test_torchrun_two_processes_train_checkpoint_and_resume(tmp_path, shards):
    env = {**base_env(tmp_path), "NPROC_PER_NODE": "2", "TRAINER": "ddp_cpu", "RUN_NAME": "tr",
           "MASTER_PORT": str(free_port())}
    first, second = run_twice(["bash", str(REPO / "jobs" / "torchrun.sh"), *TINY, shards], env, tmp_path / "out" / "tr")
    for out, steps in ((first, 2), (second, 4)):
        for rank in (0, 1):  # both processes ran fyc-train to the end
            assert f"rank {rank} finished at step {steps}" in out, out[-3000:]


@pytest.mark.slow
def test_ray_train_two_cpu_workers_train_checkpoint_and_resume(tmp_path, shards):
    # a short RAY_TMPDIR: Ray's AF_UNIX socket paths under it must stay within 107 bytes
    ray_tmp = tempfile.mkdtemp(prefix="fyc-ray-", dir="/tmp")
    env = {**base_env(tmp_path), "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": ray_tmp}
    command = [str(BIN / "python"), str(REPO / "jobs" / "ray_train.py"), "--workers", "2", "--num-cpus", "2", "--",
               *TINY, shards, "run_name=ray"]
    try:
        first, second = run_twice(command, env, tmp_path / "out" / "ray")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    for out, steps in ((first, 2), (second, 4)):
        for rank in (0, 1):
            assert f"Ray worker {rank}): finished at step {steps}" in out, out[-3000:]
