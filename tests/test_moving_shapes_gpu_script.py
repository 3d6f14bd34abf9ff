"""bench/moving_shapes_gpu.sh: the GPU runner a user starts for the MovingShapes recipe and its
ablations. Run here on the CPU (trainer.accelerator=cpu in each run's overrides): the script,
the runs side by side, the fail-fast stop and the parallel evaluation are the same code paths."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fyc_train.utils.synthetic_shards import write_shards

REPO = Path(__file__).resolve().parents[1]
CPU_RUN = "trainer.accelerator=cpu data.batch_size=2 data.num_workers=0 data.steps_per_epoch=3 logger=none"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gpu_script_shards")
    write_shards(folder, num_shards=2, per_shard=4, num_frames=8, size=64)
    return folder


def run_script(shards: Path, out: Path, runs: str, timeout: int, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "SHARDS": str(shards), "OUT_DIR": str(out), "RUNS": runs,
           "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", str(REPO / "bench" / "moving_shapes_gpu.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(300)
def test_a_failing_run_stops_the_others_at_once(shards, tmp_path):
    runs = f"good {CPU_RUN} trainer.max_steps=100000\nbad {CPU_RUN} model.unet.block_out_chanels=[8]"
    start = time.monotonic()
    proc = run_script(shards, tmp_path, runs, timeout=240, TRAIN_TIME="00:00:03:00")
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "training run bad failed" in proc.stderr and "block_out_chanels" in proc.stderr, proc.stderr
    # the good run was stopped, not left to train out its 3 minutes
    assert elapsed < 120, f"took {elapsed:.0f} s"
    assert not (tmp_path / "runs" / "good" / "checkpoints" / "last.ckpt").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_trains_side_by_side_then_writes_curves_evaluations_and_ablations(shards, tmp_path):
    runs = f"recipe {CPU_RUN} trainer.max_steps=4\npaper_masking {CPU_RUN} trainer.max_steps=4 " \
           "module.first_frame_mask_ratio=null"
    proc = run_script(shards, tmp_path, runs, timeout=840, CKPT_EVERY_S="1", CURVE_SCENES="1", FINAL_SCENES="1",
                      EVAL_THREADS="1", CURVE_JOBS="2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (tmp_path / "summary.txt").read_text()
    assert "recipe: step 4" in summary or "recipe: step 3" in summary, summary
    for name in ("recipe", "paper_masking"):
        points = json.loads((tmp_path / "curves" / name / "curve.json").read_text())["points"]
        assert points and all(p["summary"]["model_first_frame"]["num_videos"] == 12 for p in points)
        metrics = json.loads((tmp_path / "eval" / name / "metrics.json").read_text())
        assert set(metrics["summary"]) == {"model_first_frame", "impose_first_frame"}
    # the MA ablation and the untrained baseline: on the first run only (ABLATE_RUNS default)
    for ablation in ("ma_zero", "untrained"):
        metrics = json.loads((tmp_path / "eval" / f"recipe_{ablation}" / "metrics.json").read_text())
        assert metrics["config"]["ablate"] == ablation
    assert not (tmp_path / "eval" / "paper_masking_ma_zero").exists()
    assert "--- eval_recipe_ma_zero" in summary and "| direction_accuracy |" in summary


@pytest.mark.timeout(600)
def test_step_benchmark_reports_every_variant_and_the_profile(shards, capsys):
    """bench/bench_moving_shapes_step.py (the numbers behind conf/train/experiment/moving_shapes_gpu.yaml)."""
    sys.path.insert(0, str(REPO / "bench"))
    import bench_moving_shapes_step

    bench_moving_shapes_step.main(["--shards", str(shards / "*.tar"), "--device", "cpu", "--steps", "1", "--warmup", "1",
                                   "--rows", "5", "--override", "data.batch_size=2"])
    out = capsys.readouterr().out
    assert "Self CPU time total" in out  # the profiler table
    rates = {line.rsplit("steps/s", 1)[0].rsplit(None, 1)[0].strip(): float(line.split("steps/s")[0].split()[-1])
             for line in out.splitlines() if "steps/s" in line}
    assert set(rates) == {"fp32", "fp32+cudnn.benchmark", "bf16 autocast+cudnn.benchmark",
                          "bf16 autocast+cudnn.benchmark+channels_last"}, out
    assert all(rate > 0 for rate in rates.values()), rates
