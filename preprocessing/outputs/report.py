"""report.html: what a curator checks after a run, in one self-contained file.

Plots are matplotlib (Agg) PNGs embedded as base64 data URIs; thumbnails are the first frame of
sample clips (decoded from the shards with PyAV) with the motion mask overlaid in red.
"""

from __future__ import annotations

import base64
import html
import io
import json
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from preprocessing.config import to_container
from preprocessing.outputs.stats import reason_slug


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure_png(draw) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=90)
    draw(ax)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _hbar(ax, counts: Counter, title: str, color: str) -> None:
    items = counts.most_common()[::-1]
    if not items:
        ax.text(0.5, 0.5, "none", ha="center", va="center")
    else:
        ax.barh([k or "(empty)" for k, _ in items], [v for _, v in items], color=color)
    ax.set_title(title)


def _first_frame(mp4: bytes) -> np.ndarray | None:
    import av

    try:
        with av.open(io.BytesIO(mp4)) as container:
            for frame in container.decode(video=0):
                return frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError:
        return None
    return None


def _thumbnail(mp4: bytes, mask_png: bytes) -> bytes | None:
    from PIL import Image

    frame = _first_frame(mp4)
    if frame is None:
        return None
    mask = np.asarray(Image.open(io.BytesIO(mask_png)).convert("L").resize(frame.shape[1::-1])) > 127
    overlay = frame.astype(np.float32)
    overlay[mask] = 0.55 * overlay[mask] + 0.45 * np.array([255, 40, 40], np.float32)
    image = Image.fromarray(overlay.clip(0, 255).astype(np.uint8))
    image.thumbnail((192, 192))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _samples_from_shards(out_dir: Path, shards: list[str], limit: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for shard in shards:
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(out_dir / shard) as tar:
            for info in tar:
                key, _, ext = info.name.partition(".")
                data = tar.extractfile(info)
                if data is not None:
                    members.setdefault(key, {})[ext] = data.read()
        for key, parts in members.items():
            if {"mp4", "json", "mask.png"} <= parts.keys():
                found.append({"key": key, **parts})
            if len(found) >= limit:
                return found
    return found


def write_report(out_dir: str | Path, cfg: Any, top_prompts: int = 20) -> Path:
    out = Path(out_dir)
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    status_counts = Counter(r["status"] for r in rows)
    reason_counts = Counter(f"{r['status']}: {reason_slug(r['reason'])}" for r in rows if r["status"] != "ok")
    windows_path = out / "windows.parquet"
    windows = pq.read_table(windows_path).to_pylist() if windows_path.exists() else []
    labelled = [w for w in windows if w["status"] == "ok"] or ok  # one label per window when cut into windows
    prompt_counts = Counter(r["motion_prompt"] for r in labelled)
    magnitudes = [r["magnitude"] for r in labelled if r["magnitude"] is not None]
    suspect = [w for w in labelled if w.get("label_warning")]

    def hist(ax):
        if magnitudes:
            ax.hist(magnitudes, bins=min(40, max(5, len(magnitudes) // 2)), color="#3b7dd8")
        ax.set_title("motion magnitude (ok clips)")
        ax.set_xlabel("px per sampled step at flow.size")

    plots = {
        "Magnitude histogram": _figure_png(hist),
        "Top motion prompts": _figure_png(lambda ax: _hbar(ax, Counter(dict(prompt_counts.most_common(top_prompts))),
                                                            f"top {top_prompts} motion prompts", "#47a447")),
        "Status breakdown": _figure_png(lambda ax: _hbar(ax, status_counts, "rows by status", "#888888")),
        "Reasons (not ok)": _figure_png(lambda ax: _hbar(ax, reason_counts, "rows by reason", "#d9534f")),
    }
    shards = sorted({r["shard"] for r in ok if r["shard"]})
    limit = int(getattr(cfg, "report_thumbnails", 12))
    thumbs = []
    for sample in _samples_from_shards(out, shards, limit):
        png = _thumbnail(sample["mp4"], sample["mask.png"])
        meta = json.loads(sample["json"])
        if png is not None:
            thumbs.append((png, meta))

    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>fyc-preprocess report</title>",
        "<style>body{font-family:sans-serif;margin:20px;background:#fff;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
        ".grid{display:flex;flex-wrap:wrap;gap:10px}.thumb{width:200px;font-size:12px}"
        "img.plot{max-width:560px}</style></head><body>",
        f"<h1>fyc-preprocess report</h1><p>Output: {esc(str(out.resolve()))}</p>",
        "<h2>Counts</h2><table><tr><th>status</th><th>rows</th></tr>",
    ]
    parts += [f"<tr><td>{esc(k)}</td><td class='count'>{v}</td></tr>" for k, v in sorted(status_counts.items())]
    parts.append(f"<tr><th>total</th><th class='count'>{len(rows)}</th></tr></table>")
    parts.append("<h3>Reasons</h3><table><tr><th>status: reason</th><th>rows</th></tr>")
    parts += [f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in reason_counts.most_common()]
    if windows:
        window_status = Counter(w["status"] for w in windows)
        parts.append(f"</table><h3>Windows</h3><p>{len(windows)} windows cut from {len(rows)} input rows: "
                     + ", ".join(f"{esc(k)} {v}" for k, v in sorted(window_status.items())) + "</p>")
    else:
        parts.append("</table>")
    parts.append(f"<h2>Label warnings</h2><p class='label-warnings'>{len(suspect)} of {len(labelled)} "
                 "ok clips have a caption that names a motion but measured motion zero (see "
                 "docs/preprocessing.md, Mask and magnitude).</p>")
    if suspect:
        parts.append("<table><tr><th>key</th><th>motion prompt</th><th>magnitude</th><th>warning</th></tr>")
        parts += [f"<tr><td>{esc(w['key'])}</td><td>{esc(w['motion_prompt'] or '')}</td><td>{w['magnitude'] or 0:.2f}</td>"
                  f"<td>{esc(w['label_warning'])}</td></tr>" for w in suspect[:100]]
        parts.append("</table>")
    parts.append("<h2>Plots</h2><div class='grid'>")
    parts += [f"<figure><img class='plot' alt='{esc(t)}' src='{_png_uri(p)}'><figcaption>{esc(t)}</figcaption></figure>"
              for t, p in plots.items()]
    parts.append(f"</div><h2>Sample clips ({len(thumbs)} shown, first frame, red = motion mask)</h2><div class='grid'>")
    for png, meta in thumbs:
        parts.append(f"<div class='thumb'><img alt='thumbnail' src='{_png_uri(png)}'><br>"
                     f"<b>{esc(str(meta.get('motion_prompt', '')))}</b> | magnitude {float(meta.get('magnitude', 0)):.2f}"
                     f"<br>{esc(str(meta.get('caption', ''))[:120])}</div>")
    parts.append("</div><h2>Config</h2><pre>")
    parts.append(esc(json.dumps(to_container(cfg) if not isinstance(cfg, dict) else cfg, indent=2, default=str)))
    parts.append("</pre></body></html>")
    path = out / "report.html"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path
