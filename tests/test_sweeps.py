"""`fyc-train -m hparams_search=optuna_lr` run twice: each sweep's trials get run directories of
their own (a re-run never auto-resumes the earlier sweep's checkpoints under new
hyperparameters), and the Optuna study persists in sqlite, so the second sweep continues it."""

from __future__ import annotations

import sys
import subprocess
from pathlib import Path

import pytest

from fyc_train.utils.synthetic_shards import write_shards

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_rerun_sweep_gets_new_trial_dirs_and_continues_the_persistent_study(tmp_path):
    import optuna

    write_shards(tmp_path / "shards", num_shards=2, per_shard=2, num_frames=8, size=32)
    env = {"FYC_OUTPUT_DIR": str(tmp_path / "out"), "PATH": str(Path(sys.executable).parent),
           "HOME": str(tmp_path), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    args = [str(Path(sys.executable).parent / "fyc-train"), "-m", "hparams_search=optuna_lr", "experiment=tiny",
            f"data.shards={tmp_path}/shards/shard-*.tar", "data.num_workers=0", "data.batch_size=2",
            "data.steps_per_epoch=2", "data.val_batches=1", "trainer.limit_val_batches=1", "trainer.max_steps=1",
            "hydra.sweeper.n_trials=1", "hydra.sweeper.sampler.n_startup_trials=1", "callbacks=minimal",
            "logger=none", "export.enabled=false"]
    outputs = []
    for _ in range(2):
        proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        assert "rank 0 finished at step 1" in out
        outputs.append(out)
    sweeps = tmp_path / "out" / "sweeps" / "sweep_optuna_lr"
    runs = sorted(sweeps.glob("*/trial_0"))
    assert len(runs) == 2, sorted(p.relative_to(sweeps) for p in sweeps.rglob("*") if p.is_dir())
    for run in runs:  # the trial's run directory holds its checkpoint (and Hydra's record of the job)
        assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "hydra" / "overrides.yaml").is_file()
    assert "resuming from" not in outputs[1], "the second sweep resumed a checkpoint of the first"
    # one study across both sweeps: the second invocation loaded it and added its trial
    assert "Using an existing study" in outputs[1]
    study = optuna.load_study(study_name="sweep_optuna_lr", storage=f"sqlite:///{sweeps / 'study.db'}")
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2 and all(t.value > 0 for t in trials)
    for run in runs:
        assert (run.parent / "optimization_results.yaml").is_file()
