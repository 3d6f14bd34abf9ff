"""jobs/slurm_train.sbatch without SLURM: its header (the log file SLURM opens before the script
runs), and its body under the environment SLURM sets, with an `srun` on PATH that runs the
command it is given: the run directory follows the job name, so a requeued job (same id) and a
job submitted again (new id) land in the same directory; the default job name is refused."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fyc_train.utils.synthetic_shards import write_shards

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "jobs" / "slurm_train.sbatch"
SRUN = """#!/bin/bash
# runs the command srun was given (one task), dropping srun's own options; records them
while [[ "$1" == -* ]]; do echo "$1" >> "$SRUN_LOG"; shift; done
exec "$@"
"""


def sbatch_options() -> dict[str, str]:
    options = {}
    for line in SCRIPT.read_text().splitlines():
        if not line.startswith("#"):
            break  # sbatch stops reading #SBATCH lines at the first command
        if m := re.match(r"#SBATCH\s+--([\w-]+)(?:=(\S+))?", line):
            options[m.group(1)] = m.group(2) or ""
    return options


def test_sbatch_header_writes_its_log_where_slurm_can_open_it():
    options = sbatch_options()
    assert "/" not in options["output"], "the log path must not need a folder the script would create"
    assert {"requeue", "signal", "job-name"} <= set(options), options
    assert options["signal"].startswith("SIGUSR1@")


@pytest.mark.slow
def test_requeued_and_resubmitted_jobs_share_the_run_directory(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text(SRUN)
    (tmp_path / "bin" / "srun").chmod(0o755)
    write_shards(tmp_path / "shards", num_shards=1, per_shard=1, num_frames=8, size=32)
    base = {"PATH": f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
            "FYC_OUTPUT_DIR": str(tmp_path / "out"), "SRUN_LOG": str(tmp_path / "srun.log"),
            "SLURM_JOB_NUM_NODES": "1", "SLURM_NTASKS_PER_NODE": "1"}
    args = ["bash", str(SCRIPT), "experiment=tiny", f"data.shards={tmp_path}/shards/shard-000000.tar",
            "validate_only_config=true"]

    def job(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=tmp_path, env={**base, **env}, capture_output=True, text=True, timeout=300)

    refused = job(SLURM_JOB_NAME="fyc-train", SLURM_JOB_ID="100")
    assert refused.returncode == 2 and "name the run: sbatch --job-name=NAME" in refused.stderr
    run_dirs = []
    for job_id, restarts in (("101", "1"), ("202", "0")):  # requeued (same id), submitted again (new id)
        proc = job(SLURM_JOB_NAME="stage1-a", SLURM_JOB_ID=job_id, SLURM_RESTART_COUNT=restarts)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        run_dirs += re.findall(r"^  run_dir: (\S+)$", proc.stdout, re.M)
    assert run_dirs == [str(tmp_path / "out" / "stage1-a")] * 2, run_dirs
    assert (tmp_path / "srun.log").read_text().split() == ["--kill-on-bad-exit=1"] * 2
    # an explicit run_name= wins over the job name (one value, no duplicate override)
    named = subprocess.run([*args, "run_name=other"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                           env={**base, "SLURM_JOB_NAME": "fyc-train", "SLURM_JOB_ID": "303"})
    assert named.returncode == 0, named.stderr[-3000:]
    assert re.findall(r"^  run_dir: (\S+)$", named.stdout, re.M) == [str(tmp_path / "out" / "other")]
    assert not os.path.exists(tmp_path / "logs")
