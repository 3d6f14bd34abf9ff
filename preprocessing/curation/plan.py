"""The curation plan: one row per input manifest row (all inputs, merged in order) and its fate.

Every step (select, reprompt, dedupe, balance) looks only at rows still `candidate` and marks
the ones it drops with a reason; what is left is kept. Reasons start with the step's name
(`select: ...`, `dedupe: ...`), which stats.json and report.html group by.
"""

from __future__ import annotations

import hashlib

import pandas as pd

CANDIDATE, KEPT, DROPPED = "candidate", "kept", "dropped"


def candidates(plan: pd.DataFrame) -> pd.Series:
    return plan["curation"] == CANDIDATE


def drop(plan: pd.DataFrame, mask: pd.Series, reason: str | pd.Series) -> int:
    """Mark candidate rows where `mask` holds as dropped with `reason`; returns how many."""
    mask = mask & candidates(plan)
    plan.loc[mask, "curation"] = DROPPED
    plan.loc[mask, "curation_reason"] = reason if isinstance(reason, str) else reason[mask]
    return int(mask.sum())


def seeded_order(plan: pd.DataFrame, seed: int) -> pd.Series:
    """A per-row rank key that depends only on (seed, input, id): the same rows win every run."""
    return pd.Series([hashlib.sha256(f"{seed}:{s}:{i}".encode()).hexdigest()
                      for s, i in zip(plan["source_index"], plan["id"])], index=plan.index)


def finalize(plan: pd.DataFrame, kept_reason: str, max_samples: int) -> pd.DataFrame:
    """Kept rows -> output chunks (in merged order) and shards; manifest columns for every row."""
    plan = plan.copy()
    kept = candidates(plan)
    plan.loc[kept, "curation"] = KEPT
    plan.loc[kept, "curation_reason"] = kept_reason
    plan["row_index"] = range(len(plan))
    order = kept.cumsum() - 1
    plan["chunk"] = (order // max_samples).where(kept, -1).astype("int64")
    plan["shard"] = [f"shards/shard-{c:06d}.tar" if c >= 0 else "" for c in plan["chunk"]]
    plan["status"] = plan["curation"].map({KEPT: "ok", DROPPED: "dropped"})
    plan["reason"] = plan["curation_reason"].where(plan["curation"] == DROPPED, "")
    return plan
