"""`fyc-curate inspect DIR [--key KEY | --index N] [--dump OUT]`: what a shard set holds.

Prints the manifest's counts (status, reasons, curation steps), prompts, magnitudes, shards and
whether samples carry latents; `--dump` writes one sample as OUT/<key>.mp4, <key>.mask.png,
<key>.json (and <key>.latents.npy) for a person to look at, byte for byte as stored.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from preprocessing.curation.members import read_members, shard_index
from preprocessing.outputs.stats import reason_slug


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fyc-curate inspect", description=__doc__.split("\n\n")[1])
    p.add_argument("dir", type=Path, help="a fyc-preprocess or fyc-curate output folder")
    p.add_argument("--key", help="sample to dump (default: the first ok row)")
    p.add_argument("--index", type=int, default=0, help="or the N-th ok row (default 0)")
    p.add_argument("--dump", type=Path, help="folder to write the sample's members into")
    p.add_argument("--top", type=int, default=10, help="motion prompts listed")
    return p


def summary(folder: Path, top: int = 10) -> str:
    rows = pq.read_table(folder / "manifest.parquet").to_pandas()
    ok = rows[rows["status"] == "ok"]
    lines = [f"{folder}: {len(rows)} manifest rows, {len(ok)} ok in {ok['shard'].nunique()} shard(s)"]
    lines.append("status: " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(rows["status"]).items())))
    reasons = Counter(f"{s}: {reason_slug(r)}" for s, r in zip(rows["status"], rows["reason"]) if s != "ok")
    if reasons:
        lines.append("reasons: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common()))
    if "source" in rows:
        lines.append("inputs: " + ", ".join(f"{k} ({v} rows)" for k, v in Counter(rows["source"]).items()))
    mags = ok["magnitude"].dropna().to_numpy()
    if len(mags):
        q = np.quantile(mags, [0, 0.25, 0.5, 0.75, 1])
        lines.append("magnitude: min {:.2f}, q25 {:.2f}, median {:.2f}, q75 {:.2f}, max {:.2f}".format(*q))
    lines.append(f"motion prompts ({ok['motion_prompt'].nunique()} distinct), top {top}:")
    lines += [f"  {n:6d}  {p!r}" for p, n in Counter(ok["motion_prompt"]).most_common(top)]
    shards = sorted(set(ok["shard"]))
    if shards:
        exts = Counter(e for s in shards for members in shard_index(str(folder / s)).values() for e in members)
        lines.append("members: " + ", ".join(f".{e} {n}" for e, n in sorted(exts.items())))
        first = next(iter(shard_index(str(folder / shards[0]))))
        record = json.loads(read_members(folder / shards[0], first)["json"]).get("latents")
        lines.append("latents: " + (f"{record['shape']} {record['dtype']} by {record['autoencoder']}"
                                    if record else "none (training decodes the clips)"))
    return "\n".join(lines)


def dump(folder: Path, out: Path, key: str | None = None, index: int = 0) -> list[Path]:
    rows = pq.read_table(folder / "manifest.parquet", columns=["key", "status", "shard"]).to_pandas()
    ok = rows[rows["status"] == "ok"]
    match = ok[ok["key"] == key] if key else ok.iloc[index:index + 1]
    if match.empty:
        raise SystemExit(f"fyc-curate inspect: no ok sample {'with key ' + repr(key) if key else f'#{index}'} "
                         f"in {folder} ({len(ok)} ok samples)")
    row = match.iloc[0]
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for ext, data in read_members(folder / row["shard"], row["key"]).items():
        path = out / f"{row['key']}.{ext}"
        path.write_bytes(data)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not (args.dir / "manifest.parquet").is_file():
        print(f"fyc-curate inspect: {args.dir} holds no manifest.parquet (not a fyc-preprocess output folder)")
        return 2
    print(summary(args.dir, args.top))
    if args.dump:
        for path in dump(args.dir, args.dump, args.key, args.index):
            print(f"wrote {path}")
    return 0
