"""bench/bench_preprocess_vs_serial.py runs its three commands (serial script, RAFT-only floor, the
real fyc-preprocess) as whole processes on one corpus and prints the ratio lines from that run."""
from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_preprocess_vs_serial as bench  # noqa: E402


@pytest.mark.slow
def test_bench_times_all_three_commands_on_the_same_clips_and_prints_the_ratios(tmp_path, raft_small_path, capsys):
    out = tmp_path / "bench"
    result = bench.main(["--clips", "2", "--synthetic-size", "64", "--size", "128", "--frames", "3",
                         "--num-updates", "1", "--repeats", "1", "--weights", str(raft_small_path),
                         "--out", str(out)])
    printed = capsys.readouterr().out
    assert "speed-up over serial:" in printed and "floor / job:" in printed
    assert json.loads(printed.strip().splitlines()[-1]) == result
    # the same 2 clips went through every command: 2 pairs each in the floor, 2 samples out of each
    assert result["ok_job"] == 2 and result["ok_serial"] == 2 and result["pairs"] == 4
    assert result["speedup_over_serial"] == pytest.approx(result["serial_s"] / result["job_s"], rel=1e-2, abs=2e-3)
    assert result["floor_over_job"] == pytest.approx(result["floor_raft_s"] / result["job_s"], rel=1e-2, abs=2e-3)
    assert 0 < result["floor_raft_s"] < result["job_s"]  # RAFT alone is part of what the job does
    assert result["job_step_seconds"]["flow"] > 0
    with tarfile.open(out / "serial_0" / "serial.tar") as tar:
        assert sorted(n.rsplit(".", 1)[-1] for n in tar.getnames()) == ["json", "json", "mp4", "mp4", "png", "png"]
    assert list((out / "job_0" / "job" / "shards").glob("*.tar"))
