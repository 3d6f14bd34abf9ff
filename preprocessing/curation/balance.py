"""Step 5, balance: at most N clips per motion prompt and/or per magnitude bin.

Which clips of an over-full group stay is decided by a seeded hash of (input, id): the same
rows win on every run and resume, and changing `balance.seed` draws another subset. The prompt
cap is applied first, then the magnitude-bin cap; rows outside the bin edges are not capped.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from preprocessing.curation.plan import candidates, drop, seeded_order


def _cap(plan: pd.DataFrame, groups: pd.Series, cap: int, seed: int, what: str, key: str) -> int:
    rows = plan.loc[candidates(plan)].assign(_group=groups, _rank=seeded_order(plan, seed))
    rows = rows[rows["_group"].notna()]
    if rows.empty:
        return 0
    rank = rows.sort_values("_rank").groupby("_group", sort=False, observed=True).cumcount()
    sizes = rows.groupby("_group", observed=True)["_group"].transform("size")
    over = rank[rank >= cap].index
    reasons = pd.Series("", index=plan.index)
    reasons[over] = [f"balance: {what} {rows.at[i, '_group']} has {sizes[i]} clips, over {key}={cap} "
                     f"(kept {cap} chosen by balance.seed)" for i in over]
    return drop(plan, reasons != "", reasons)


def balance(plan: pd.DataFrame, cfg: Any) -> dict[str, int]:
    dropped = {}
    if cfg.max_per_prompt is not None:
        prompts = plan["motion_prompt"].map(repr)
        dropped["prompt"] = _cap(plan, prompts, int(cfg.max_per_prompt), int(cfg.seed), "prompt",
                                 "balance.max_per_prompt")
    if cfg.max_per_magnitude_bin is not None:
        bins = pd.cut(plan["magnitude"], list(cfg.magnitude_bins), right=False).astype(str)
        bins = bins.where(plan["magnitude"].notna() & (bins != "nan"))
        dropped["magnitude_bin"] = _cap(plan, "magnitude " + bins, int(cfg.max_per_magnitude_bin),
                                        int(cfg.seed), "bin", "balance.max_per_magnitude_bin")
    return dropped
