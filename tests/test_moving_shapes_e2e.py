"""MovingShapes end to end: real corpus CLI -> real fyc-preprocess (Ray, RAFT) -> real fyc-train
(a subprocess of the command, 500 steps) -> evaluation through the real FYCPipeline.

The claim a user relies on: the whole chain runs on real components, and a brief training on the
pipeline's own output beats the untrained model on held-out scenes in what such a run learns:
the first frame (I1-MSE), speed control (Spearman between requested and measured speed) and
locality. Measured at 500 steps in six runs of different configurations (docs/moving_shapes_history.md,
"CI-sized runs"): I1-MSE 31-44 against the untrained 1,554, locality 0.167-0.189 against 0.105,
speed Spearman 0.18-0.76 against 0.

What a CI-sized run does NOT reach is asserted nowhere: direction stays at chance, and speed within
30% at 0, until a run has seen ~10,000 training clips (1,250 steps of 8: 16 minutes of the recipe on
2 idle cores, on top of the preprocessing), and when it appears varies from run to run. The CI-sized runs
looked for a variant that learns it within CI's budget (4-frame clips, 8x8 latents, a
trainable text encoder, MA lr x10, a cosine to 0 at 1,000, batch 4 and 2, a half-width U-Net at lr
2e-3, a 160-clip corpus): none did reliably. This test's own setup with the half-width U-Net for
1,500 steps stayed at direction 0.17 where the same model on another preprocessing of the corpus
had reached 0.69. The every-metric comparison of the full recipe is in docs/moving_shapes.md.
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
TRAIN_STEPS = 500  # ~6.5 min on 2 free cores (the recipe at 64x64x8, batch 8: ~1.3 steps/s)
NUM_VIDEOS = 960   # the recipe's corpus size; flow 128 with 3 RAFT updates preprocesses it in ~4 min (227 s)


def run(module: str, args: list[str], timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{module} {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, raft_small_path) -> Path:
    root = tmp_path_factory.mktemp("moving_shapes_e2e")
    run("preprocessing.synthetic.cli", ["--out", str(root / "corpus"), "--num-videos", str(NUM_VIDEOS), "--size", "64", "64",
                                        "--frames", "8", "--speed-range", "0.5", "3.0",
                                        "--motions-per-scene", "4"], timeout=120)
    run("preprocessing.cli", [f"input.manifest={root / 'corpus' / 'manifest.csv'}", f"output.dir={root / 'pre'}",
                              "clip.num_frames=8", "clip.stride=1", "clip.size=[64,64]", "flow.size=128",
                              "flow.num_updates=3", "flow.mask_region=first", f"flow.weights={raft_small_path}", "ray.num_cpus=2",
                              # 64-px clips, 3 updates: decode/encode are a large share, so RAFT keeps 1 of the
                              # 2 cores (227 s; RAFT on both: 289 s)
                              "ray.flow_threads=1",
                              "shard.max_samples=160", "report_thumbnails=0"], timeout=1200)
    run("fyc_train.cli.train", ["experiment=moving_shapes", f"data.shards={root / 'pre' / 'shards' / '*.tar'}",
                                f"paths.output_dir={root / 'runs'}", "run_name=ms", "logger=none",
                                f"trainer.max_steps={TRAIN_STEPS}", f"checkpoint_every_n_steps={TRAIN_STEPS}",
                                "export.enabled=false", "trainer.limit_val_batches=0",
                                "callbacks.last_checkpoint.save_top_k=-1",
                                # as measured in the CI-sized runs; the recipe's cosine is ~1e-3 here anyway
                                "module.lr_schedule=constant_with_warmup", "module.lr_schedule_steps=null"],
        timeout=2400)
    ckpt = root / "runs" / "ms" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file(), f"fyc-train wrote no {ckpt}"
    return ckpt


def summary(checkpoint: Path, ablate: str) -> dict:
    torch.manual_seed(0)
    # steps=1: the zero-terminal-SNR v-prediction at t=T is the conditional mean, what a short
    # run learns first (more DDIM steps add the low-noise predictions it has not learned yet);
    # magnitudes 2 / 3.5 / 5 at flow 128 are 1 / 1.75 / 2.5 px per frame, as in the recipe's evaluation
    report = evaluate_model(load_for_sampling(checkpoint), num_scenes=4, seed=1, magnitudes=(2.0, 3.5, 5.0),
                            flow_size=128, steps=1, impose_modes=(False,), ablate=ablate, checkpoint=checkpoint,
                            progress=False)
    return report["summary"]["model_first_frame"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_brief_training_beats_the_untrained_model_on_first_frame_speed_and_locality(trained_checkpoint):
    torch.set_num_threads(2)
    trained, untrained = summary(trained_checkpoint, "none"), summary(trained_checkpoint, "untrained")
    table = "\n".join(f"{k}: trained {trained[k]} untrained {untrained[k]}" for k in trained)
    print(table)
    assert trained["num_videos"] == untrained["num_videos"] == 4 * 4 * 3, table
    for summary_ in (trained, untrained):  # every metric was measured on every video
        for key in ("direction_accuracy", "locality", "speed_spearman", "speed_rel_error", "i1_mse"):
            assert math.isfinite(summary_[key]), table
    # Measured on these 48 videos (docs/moving_shapes_history.md): untrained 1,554 / 0.105 / 0 (it does not follow the
    # requested speed); six 500-step runs 31-44 / 0.167-0.189 / 0.18-0.76 (within a scene 0.38-0.94)
    assert trained["i1_mse"] < 0.1 * untrained["i1_mse"], table  # a copy of the image, not noise
    assert trained["locality"] > untrained["locality"] + 0.03, table  # motion drawn at the clicked object
    assert trained["speed_spearman"] > untrained["speed_spearman"] + 0.1, table  # faster when asked faster
    assert trained["speed_spearman_within_scene"] > 0.2, table


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
