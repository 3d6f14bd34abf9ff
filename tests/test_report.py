"""report.html: self-contained, renders in a real headless Chromium, shows plots, counts, thumbnails."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from preprocessing.config import PreprocessConfig
from preprocessing.outputs.manifest import manifest_row, part_path, write_manifest, write_table_atomic
from preprocessing.outputs.report import write_report
from preprocessing.shards import write_shard
from preprocessing.steps.encode import encode_mp4, encode_png

CHROMIUM = Path("/usr/bin/chromium")


def make_output(out: Path) -> None:
    """A small real output folder: shard with encoded clips + parts + manifest (no Ray needed)."""
    rng = np.random.default_rng(0)
    samples, rows = [], []
    for i in range(8):
        status = "ok" if i < 5 else ("filtered" if i < 7 else "error")
        sample = {"row_index": i, "id": f"clip{i}", "key": f"clip{i}_0000000{i}", "caption": f"a disc moves {i}",
                  "video": f"/data/clip{i}.mp4", "status": status,
                  "reason": {"ok": "", "filtered": "low_motion: magnitude 0.01 < filter.min_magnitude=0.1",
                             "error": "decode_error: moov atom not found"}[status]}
        if status == "ok":
            frames = np.zeros((4, 64, 64, 3), np.uint8)
            frames[:] = rng.integers(40, 200, size=3, dtype=np.uint8)
            mask = np.zeros((64, 64), np.uint8)
            mask[16:40, 10 + i : 30 + i] = 255
            sample.update(motion_prompt=["move left", "sway", "move left", "smile", "move up"][i],
                          magnitude=0.5 + i, mask=mask, mp4=encode_mp4(frames, 8.0, 18, "ultrafast"),
                          mask_png=encode_png(mask))
            sample["json"] = {"id": sample["id"], "caption": sample["caption"],
                              "motion_prompt": sample["motion_prompt"], "magnitude": sample["magnitude"]}
            samples.append(sample)
        rows.append(manifest_row(sample, 0, "shards/shard-000000.tar"))
    write_shard(out / "shards" / "shard-000000.tar", samples)
    write_table_atomic(rows, part_path(out, 0))
    write_manifest(out, 1)


def test_report_is_self_contained_and_renders_in_chromium(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail("the report test needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    out = tmp_path / "out"
    make_output(out)
    cfg = OmegaConf.structured(PreprocessConfig)
    cfg.output.dir = str(out)
    html = write_report(out, cfg).read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(images) == 4 + 5  # four plots, five thumbnails
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG")
    assert not re.search(r"(src|href)=['\"]?https?:", html)  # nothing fetched when opened
    assert "<td class='count'>5</td>" in html and "<th class='count'>8</th>" in html
    assert "low_motion" in html and "decode_error" in html and "move left" in html
    assert "min_magnitude" in html  # the config is shown

    shot = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'prof'}",
           f"--screenshot={shot}", "--window-size=1200,2000", (out / "report.html").as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120)
    assert shot.exists(), "chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels.std() > 20  # not a blank page
    # the plots drew: the magnitude histogram's blue and the reasons chart's red are on screen
    blue = (np.abs(pixels - np.array([59, 125, 216])).sum(-1) < 40).sum()
    red = (np.abs(pixels - np.array([217, 83, 79])).sum(-1) < 40).sum()
    assert blue > 500 and red > 200, (blue, red)
