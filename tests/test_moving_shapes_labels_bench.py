"""bench/moving_shapes_labels.py: fyc-preprocess's magnitude labels against the corpus's known speeds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)
def test_label_bench_reads_known_speeds(tmp_path, raft_small_path, capsys):
    subprocess.run([sys.executable, "-m", "preprocessing.synthetic.cli", "--out", str(tmp_path), "--num-videos", "4",
                    "--size", "64", "64", "--frames", "4", "--speed-range", "1.0", "3.0"],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    sys.path.insert(0, str(REPO / "bench"))
    import moving_shapes_labels

    moving_shapes_labels.main(["--corpus", str(tmp_path), "--weights", str(raft_small_path), "--clips", "3",
                               "--settings", "4@128", "--core-fractions", "0.5", "0.8",
                               "--threads", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("3 clips, speeds 1.") and lines[1].startswith("updates")
    assert len(lines) == 4, lines  # one row per core fraction, from the same flows
    updates, size, core, _, slope, *_ = lines[2].split()
    assert (updates, size, core) == ("4", "128", "0.50") and lines[3].split()[2] == "0.80"
    rel_error = float(lines[2].split()[-1])
    assert 0.3 < float(slope) < 2.0, lines  # labels rise with the true speed
    assert rel_error < 0.6, lines  # RAFT-small reads these 1-3 px/frame objects roughly (measured ~0.1-0.2)
