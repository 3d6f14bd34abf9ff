"""Step 1, merge: read every input's manifest, drop rows that are not `ok`, resolve id collisions.

Collision rule: inputs are merged in the order given (input.dirs), rows in each input's manifest
order; an ok row whose `id` or `key` an earlier ok row already holds is dropped, and its reason
names the holder (input folder and row). So the first input listed wins, whatever later steps
keep: the rule does not depend on the query, the dedupe or the balance settings.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from preprocessing.curation.plan import CANDIDATE, candidates, drop

log = logging.getLogger("fyc.curate")


def read_inputs(dirs: list[Path]) -> pd.DataFrame:
    """Concatenate the inputs' manifests (columns read generically: unknown ones are carried)."""
    frames = []
    for index, folder in enumerate(dirs):
        df = pq.read_table(folder / "manifest.parquet").to_pandas()
        df["source"] = str(folder)
        df["source_index"] = index
        df["source_row_index"] = df["row_index"]
        df["source_shard"] = df["shard"]
        df["source_status"] = df["status"]
        df["source_reason"] = df["reason"]
        frames.append(df)
    plan = pd.concat(frames, ignore_index=True, sort=False)
    plan["curation"] = CANDIDATE
    plan["curation_reason"] = ""
    plan["reprompted"] = False
    return plan


def drop_not_ok(plan: pd.DataFrame) -> int:
    bad = plan["source_status"] != "ok"
    reasons = "not_ok: input row has status " + plan["source_status"].astype(str) + " (" + \
        plan["source_reason"].astype(str) + ")"
    return drop(plan, bad, reasons)


def resolve_collisions(plan: pd.DataFrame) -> list[str]:
    """Drop later ok rows whose id or key is taken; returns one line per collision (for the log)."""
    holders: dict[tuple[str, str], tuple[int, str, int]] = {}  # (column, value) -> (input, folder, row)
    reasons = pd.Series("", index=plan.index)
    rows = plan.loc[candidates(plan), ["id", "key", "source_index", "source", "source_row_index"]]
    for idx, rid, key, src, folder, row in zip(rows.index, rows["id"], rows["key"], rows["source_index"],
                                               rows["source"], rows["source_row_index"]):
        clash = next(((col, v) for col, v in (("id", rid), ("key", key)) if (col, v) in holders), None)
        if clash is None:
            holders[("id", rid)] = holders[("key", key)] = (src, folder, row)
            continue
        h_src, h_folder, h_row = holders[clash]
        reasons[idx] = (f"collision: {clash[0]} {clash[1]!r} is already taken by input {h_src} ({h_folder}) "
                        f"row {h_row}, which is kept (first input wins)")
    lines = [f"input {plan.at[i, 'source_index']} row {plan.at[i, 'source_row_index']}: {reasons[i]}"
             for i in plan.index[reasons != ""]]
    drop(plan, reasons != "", reasons)
    for line in lines[:20]:
        log.warning("%s", line)
    if len(lines) > 20:
        log.warning("... and %d more id collisions (see the manifest, reason 'collision')", len(lines) - 20)
    return lines
