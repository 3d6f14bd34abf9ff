"""The demo's summary page: where everything was written, the loss curve, metrics, contact sheets.

Self-contained HTML (images embedded as base64) so it can be copied anywhere and opened.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import pandas as pd


def _img_tag(png: bytes, alt: str, width: int | None = None) -> str:
    style = f' style="max-width:{width}px"' if width else ""
    return f'<img alt="{html.escape(alt)}"{style} src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def loss_curve_png(metrics_csv: Path) -> bytes | None:
    """Training loss (and validation loss when logged) against step, from Lightning's CSVLogger."""
    if not metrics_csv.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.read_csv(metrics_csv)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    for column, label in (("train/loss", "train loss"), ("train/loss_step", "train loss"), ("val/loss", "val loss")):
        if column in frame and "step" in frame:
            rows = frame[["step", column]].dropna()
            if len(rows):
                ax.plot(rows["step"], rows[column], label=label, marker="o" if column.startswith("val") else None)
    ax.set_xlabel("step")
    ax.set_ylabel("MSE (v-prediction)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _metrics_table(metrics_json: Path) -> str:
    if not metrics_json.is_file():
        return "<p>No evaluation metrics were written.</p>"
    report = json.loads(metrics_json.read_text())
    summaries = report.get("summary", {})
    if not summaries:
        return "<pre>" + html.escape(json.dumps(report, indent=1)[:4000]) + "</pre>"
    names = sorted({k for s in summaries.values() for k in s})
    head = "".join(f"<th>{html.escape(mode)}</th>" for mode in summaries)
    rows = []
    for name in names:
        cells = "".join(f"<td>{_fmt(s.get(name))}</td>" for s in summaries.values())
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def write_summary(out: Path, run_dir: Path, eval_dir: Path, data_dir: Path, timings: dict[str, float]) -> Path:
    """Write out/summary.html (and the loss curve as out/loss_curve.png); return the html path."""
    places = {
        "synthetic corpus (clips + manifest.csv)": out / "corpus",
        "WebDataset shards": data_dir / "shards",
        "per-row manifest": data_dir / "manifest.parquet",
        "preprocessing stats": data_dir / "stats.json",
        "preprocessing report (open in a browser)": data_dir / "report.html",
        "training run directory": run_dir,
        "checkpoints (last.ckpt resumes)": run_dir / "checkpoints",
        "W&B offline run (wandb sync to upload)": run_dir / "wandb",
        "diffusers-format export": run_dir / "export",
        "evaluation metrics": eval_dir / "metrics.json",
        "contact sheets": eval_dir / "sheets",
        "stage logs": out / "logs",
    }
    place_rows = "".join(
        f"<tr><td>{html.escape(what)}</td><td><code>{html.escape(str(path))}</code></td>"
        f"<td>{'yes' if path.exists() else 'missing'}</td></tr>" for what, path in places.items())
    timing_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.0f} s</td></tr>" for k, v in timings.items())

    curve = loss_curve_png(run_dir / "csv" / "metrics.csv")
    if curve:
        (out / "loss_curve.png").write_bytes(curve)
    sheets = sorted((eval_dir / "sheets").glob("*.png"))[:8]
    sheet_html = "".join(f"<figure>{_img_tag(p.read_bytes(), p.stem, 900)}<figcaption>{html.escape(p.name)}</figcaption></figure>"
                         for p in sheets) or "<p>No contact sheets.</p>"

    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fyc demo summary</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}} figure{{margin:1em 0}}</style></head><body>
<h1>fyc demo: MovingShapes end to end</h1>
<p>Synthetic corpus &rarr; <code>fyc-preprocess</code> (local Ray) &rarr; tiny FYC (<code>fyc-train
experiment=moving_shapes</code>) &rarr; held-out scenes sampled through the FYC pipeline and measured
(<code>fyc-eval-shapes</code>). A short demo run shows the loop working; the MovingShapes goals (docs/moving_shapes.md) need the
full recipe in docs/moving_shapes.md.</p>
<h2>Stage times</h2><table>{timing_rows}</table>
<h2>Where everything is</h2><table><tr><th>what</th><th>path</th><th>exists</th></tr>{place_rows}</table>
<h2>Loss curve</h2>{_img_tag(curve, 'loss curve') if curve else '<p>No CSV metrics found.</p>'}
<h2>Held-out evaluation</h2>{_metrics_table(eval_dir / 'metrics.json')}
<h2>Contact sheets (input, mask, generated frames)</h2>{sheet_html}
</body></html>"""
    path = out / "summary.html"
    path.write_text(page)
    return path
