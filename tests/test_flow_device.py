"""flow.device=auto|cpu|cuda: resolved against the Ray cluster's resources, failing early by key.

The resolution is checked on fake cluster resources (a GPU cluster cannot be had here); the
errors a user meets on this GPU-less machine go through the real command.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_synthetic_clip

from preprocessing.config import ConfigError
from preprocessing.devices import resolve_flow_placement

REPO = Path(__file__).resolve().parents[1]
CPU_ONLY = {"CPU": 2.0, "memory": 8e9}
TWO_GPUS = {"CPU": 16.0, "GPU": 2.0, "memory": 64e9}


def test_auto_uses_gpus_when_the_cluster_has_them():
    assert resolve_flow_placement("auto", CPU_ONLY, 1, 1.0).device == "cpu"
    gpu = resolve_flow_placement("auto", TWO_GPUS, 2, 1.0)
    assert (gpu.device, gpu.gpus_per_actor, gpu.use_gpu) == ("cuda", 1.0, True)
    assert resolve_flow_placement("auto", TWO_GPUS, 4, 0.5).gpus_per_actor == 0.5  # shared GPUs
    assert resolve_flow_placement("auto", TWO_GPUS, 1, 0.0).device == "cpu"  # no GPU asked per actor
    assert resolve_flow_placement("cpu", TWO_GPUS, 3, 1.0).device == "cpu"  # forced CPU ignores GPUs


def test_impossible_placements_fail_naming_the_key():
    with pytest.raises(ConfigError, match=r"flow\.device=cuda but the Ray cluster has no GPU.*CPU=2.*flow\.device=cpu"):
        resolve_flow_placement("cuda", CPU_ONLY, 1, 1.0)
    for device in ("cuda", "auto"):  # an actor pool larger than the GPUs would wait forever
        with pytest.raises(ConfigError, match=r"ray\.flow_actors=3 x ray\.flow_gpus_per_actor=1 needs 3 GPUs but "
                                              r"the Ray cluster has 2: set ray\.flow_actors<=2"):
            resolve_flow_placement(device, TWO_GPUS, 3, 1.0)
    with pytest.raises(ConfigError, match=r"set ray\.flow_gpus_per_actor<=2"):
        resolve_flow_placement("cuda", TWO_GPUS, 1, 4.0)
    with pytest.raises(ConfigError, match=r"ray\.flow_gpus_per_actor=0 is invalid with flow\.device=cuda"):
        resolve_flow_placement("cuda", TWO_GPUS, 1, 0.0)


def _cli(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "preprocessing.cli", *overrides], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_the_command_refuses_cuda_without_gpus_before_decoding(tmp_path):
    clip = write_synthetic_clip(tmp_path / "clip.mp4", num_frames=12).path
    manifest = tmp_path / "in.csv"
    manifest.write_text(f"video,caption\n{clip},a red disc slides to the right\n")
    out = tmp_path / "out"
    base = [f"input.manifest={manifest}", f"output.dir={out}", "flow.model=farneback", "ray.num_cpus=1"]

    bad_value = _cli(*base, "flow.device=gpu")  # schema check: no Ray started
    assert bad_value.returncode == 2
    assert "flow.device='gpu' is invalid: allowed values are auto, cpu, cuda" in bad_value.stdout + bad_value.stderr

    no_gpu = _cli(*base, "flow.device=cuda")  # checked against the live cluster, before any decode
    log = no_gpu.stdout + no_gpu.stderr
    assert no_gpu.returncode == 2, log[-3000:]
    assert "invalid config: flow.device=cuda but the Ray cluster has no GPU" in log
    assert "Traceback" not in log
    assert not (out / "shards").exists() and not (out / "manifest.parquet").exists()
