"""MovingShapes end to end: real corpus CLI -> real fyc-preprocess (Ray, RAFT) -> real fyc-train
(a subprocess of the command, briefly) -> evaluation through the real FYCPipeline.

The claim a user relies on: training on the pipeline's own output teaches the model what the
metrics measure, so after a short run it beats the same model untrained on every metric.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fyc_train.eval.run import evaluate_model
from fyc_train.sampling.checkpoint_loading import load_for_sampling

REPO = Path(__file__).resolve().parents[1]
TRAIN_STEPS = 300  # ~2 minutes on 2 free cores (tiny recipe at 64x64x8, batch 8)


def run(module: str, args: list[str], timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{module} {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, raft_small_path) -> Path:
    root = tmp_path_factory.mktemp("moving_shapes_e2e")
    run("preprocessing.synthetic.cli", ["--out", str(root / "corpus"), "--num-videos", "64", "--size", "64", "64",
                                        "--frames", "8", "--speed-range", "0.5", "3.0"], timeout=120)
    run("preprocessing.cli", [f"input.manifest={root / 'corpus' / 'manifest.csv'}", f"output.dir={root / 'pre'}",
                              "clip.num_frames=8", "clip.stride=1", "clip.size=[64,64]", "flow.size=128",
                              "flow.num_updates=3", f"flow.weights={raft_small_path}", "ray.num_cpus=2",
                              "report_thumbnails=0"], timeout=300)
    run("fyc_train.cli.train", ["experiment=moving_shapes", f"data.shards={root / 'pre' / 'shards' / '*.tar'}",
                                f"paths.output_dir={root / 'runs'}", "run_name=ms", "logger=none",
                                f"trainer.max_steps={TRAIN_STEPS}", "data.num_workers=0", "export.enabled=false",
                                "data.steps_per_epoch=1000", "trainer.limit_val_batches=0"], timeout=600)
    ckpt = root / "runs" / "ms" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file(), f"fyc-train wrote no {ckpt}"
    return ckpt


def summary(checkpoint: Path, ablate: str) -> dict:
    torch.manual_seed(0)
    report = evaluate_model(load_for_sampling(checkpoint), num_scenes=3, seed=1, magnitudes=(2.0, 5.0), steps=4,
                            impose_modes=(False,), ablate=ablate, checkpoint=checkpoint, progress=False)
    return report["summary"]["model_first_frame"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_trained_model_beats_untrained_on_every_metric(trained_checkpoint):
    torch.set_num_threads(2)
    trained, untrained = summary(trained_checkpoint, "none"), summary(trained_checkpoint, "untrained")
    table = "\n".join(f"{k}: trained {trained[k]} untrained {untrained[k]}" for k in trained)
    nan_to = lambda v, fill: fill if v is None or math.isnan(v) else v  # noqa: E731 (NaN = no signal)
    assert trained["direction_accuracy"] > untrained["direction_accuracy"], table
    assert nan_to(trained["locality"], 0.0) > nan_to(untrained["locality"], 0.0), table
    assert nan_to(trained["speed_spearman"], -1.0) > nan_to(untrained["speed_spearman"], -1.0), table
    assert trained["speed_rel_error"] < untrained["speed_rel_error"], table
    assert trained["i1_mse"] < untrained["i1_mse"], table
