"""MovingShapes end to end: real corpus CLI -> real fyc-preprocess (Ray, RAFT) -> real fyc-train
(a subprocess of the command, briefly) -> evaluation through the real FYCPipeline.

The claim a user relies on: the whole chain runs on real components, and training on the
pipeline's own output teaches the model to reconstruct the clicked image (I1-MSE far below the
untrained model's) within a CI-sized run. What a CI-sized run does NOT reach is asserted
nowhere: on 2 CPU cores ~150 steps leave direction, locality and speed at the untrained level
(measured, docs/moving_shapes.md); those need the recipe's longer run (bench/moving_shapes_curve.py:
~1,000-1,250 steps, 15-19 minutes on 2 idle cores). Session 10 looked for a CI-sized variant that
learns them (4-frame clips, 8x8 latents, both): all stayed at chance after 600-2,000 steps.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fyc_train.eval.run import evaluate_model
from fyc_train.sampling.checkpoint_loading import load_for_sampling

REPO = Path(__file__).resolve().parents[1]
TRAIN_STEPS = 60  # ~75 s on 2 free cores (the recipe at 64x64x8, batch 8: 0.84 steps/s)


def run(module: str, args: list[str], timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{module} {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, raft_small_path) -> Path:
    root = tmp_path_factory.mktemp("moving_shapes_e2e")
    run("preprocessing.synthetic.cli", ["--out", str(root / "corpus"), "--num-videos", "32", "--size", "64", "64",
                                        "--frames", "8", "--speed-range", "0.5", "3.0",
                                        "--motions-per-scene", "4"], timeout=120)
    run("preprocessing.cli", [f"input.manifest={root / 'corpus' / 'manifest.csv'}", f"output.dir={root / 'pre'}",
                              "clip.num_frames=8", "clip.stride=1", "clip.size=[64,64]", "flow.size=128",
                              "flow.num_updates=3", "flow.mask_region=first", f"flow.weights={raft_small_path}", "ray.num_cpus=2",
                              "report_thumbnails=0"], timeout=1200)
    run("fyc_train.cli.train", ["experiment=moving_shapes", f"data.shards={root / 'pre' / 'shards' / '*.tar'}",
                                f"paths.output_dir={root / 'runs'}", "run_name=ms", "logger=none",
                                f"trainer.max_steps={TRAIN_STEPS}", f"checkpoint_every_n_steps={TRAIN_STEPS}",
                                "data.num_workers=0", "export.enabled=false",
                                "data.steps_per_epoch=1000", "trainer.limit_val_batches=0",
                                "module.warmup_steps=10", "callbacks.last_checkpoint.save_top_k=-1",
                                # the recipe's cosine runs to its own max_steps (3,000); over 60 steps it
                                # would halve the mean lr that the margin below was measured with
                                "module.lr_schedule=constant_with_warmup"], timeout=1800)
    ckpt = root / "runs" / "ms" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file(), f"fyc-train wrote no {ckpt}"
    return ckpt


def summary(checkpoint: Path, ablate: str) -> dict:
    torch.manual_seed(0)
    # steps=1: the zero-terminal-SNR v-prediction at t=T is the conditional mean, what a short
    # run learns first (more DDIM steps add the low-noise predictions it has not learned yet)
    report = evaluate_model(load_for_sampling(checkpoint), num_scenes=2, seed=1, magnitudes=(2.0, 5.0), steps=1,
                            impose_modes=(False,), ablate=ablate, checkpoint=checkpoint, progress=False)
    return report["summary"]["model_first_frame"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_brief_training_learns_first_frame_reconstruction(trained_checkpoint):
    torch.set_num_threads(2)
    trained, untrained = summary(trained_checkpoint, "none"), summary(trained_checkpoint, "untrained")
    table = "\n".join(f"{k}: trained {trained[k]} untrained {untrained[k]}" for k in trained)
    print(table)
    assert trained["num_videos"] == untrained["num_videos"] == 2 * 4 * 2, table
    for summary_ in (trained, untrained):  # every metric was measured on every video
        for key in ("direction_accuracy", "speed_rel_error", "i1_mse"):
            assert math.isfinite(summary_[key]), table
    # measured with these settings: untrained 2,747 (noise); the recipe after 60 steps (warm-up
    # 10) 503, a blurred copy of the image, 0.18x: a factor 2 leaves a wide margin
    assert trained["i1_mse"] < 0.5 * untrained["i1_mse"], table


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_curve_and_probe_benches_run_on_the_trained_run(trained_checkpoint, tmp_path, capsys):
    """bench/moving_shapes_curve.py (incl. continuing another run's curve) and
    bench/moving_shapes_probe.py on the run this module trained."""
    sys.path.insert(0, str(REPO / "bench"))
    import moving_shapes_curve
    import moving_shapes_probe

    run_dir = trained_checkpoint.parents[1]
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--run-dir", str(run_dir), "--num-scenes", "1", "--magnitudes", "2.0", "--threads", "2"]
    moving_shapes_curve.main([*common, "--out", str(first)])
    evaluated = json.loads((first / "curve.json").read_text())
    moving_shapes_curve.main([*common, "--out", str(first), "--resume"])  # nothing new: nothing re-evaluated
    assert json.loads((first / "curve.json").read_text())["points"] == evaluated["points"]
    (first / "curve.json").write_text(json.dumps({**evaluated, "points": []}))
    moving_shapes_curve.main([*common, "--out", str(first), "--resume"])  # the missing checkpoint is added back
    assert json.loads((first / "curve.json").read_text())["points"] == evaluated["points"]
    moving_shapes_curve.main([*common, "--out", str(second), "--offset-steps", "1000", "--offset-minutes", "5",
                              "--append", str(first / "curve.json"), "--jobs", "2"])  # in a worker process
    points = json.loads((second / "curve.json").read_text())["points"]
    assert [p["step"] for p in points] == [TRAIN_STEPS, TRAIN_STEPS + 1000]
    assert points[1]["summary"] == points[0]["summary"]  # same checkpoint, same scenes, same numbers
    assert points[1]["minutes"] == pytest.approx(points[0]["minutes"] + 5, abs=0.01)
    assert points[0]["summary"]["model_first_frame"]["num_videos"] == 4
    assert (second / "curve.png").stat().st_size > 0

    shard = sorted((run_dir.parents[1] / "pre" / "shards").glob("*.tar"))[0]
    capsys.readouterr()
    moving_shapes_probe.main(["--checkpoint", str(trained_checkpoint), "--shard", str(shard), "--clips", "4"])
    out = capsys.readouterr().out
    assert "prompt_dep" in out.splitlines()[0]
    mean = out.strip().splitlines()[-1].split()
    assert mean[0] == "mean" and all(math.isfinite(float(v)) for v in mean[1:]), out
