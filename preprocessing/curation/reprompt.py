"""Step 2, reprompt: re-extract each candidate's motion prompt from its caption (builtin rules or
the LLM endpoint of preprocessing/prompts), without touching the clip.

The new prompt replaces `motion_prompt` in the manifest here and in the sample's json when the
shard is written (preprocessing/curation/members.py); every other member stays byte-identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from preprocessing.curation.plan import candidates, drop
from preprocessing.prompts import make_extractor


def reprompt(plan: pd.DataFrame, prompt_cfg: Any, out_dir: Path) -> int:
    """Re-extract prompts of candidate rows; drop those without motion if prompt.require_motion.
    Returns the number of rows whose prompt changed. LLM answers are cached in the output folder,
    so a resumed run asks nothing twice."""
    todo = plan.index[candidates(plan)]
    if len(todo) == 0:
        return 0
    extractor = make_extractor(prompt_cfg, out_dir)
    results = extractor.extract_many([str(c) for c in plan.loc[todo, "caption"]])
    new = pd.Series([r.motion or "" for r in results], index=todo)
    changed = int((new != plan.loc[todo, "motion_prompt"]).sum())
    plan.loc[todo, "motion_prompt"] = new
    plan.loc[todo, "prompt_source"] = [r.source for r in results]
    plan.loc[todo, "reprompted"] = True
    if prompt_cfg.require_motion:
        notes = pd.Series([f" ({r.note})" if r.note else "" for r in results], index=todo)
        empty = pd.Series(False, index=plan.index)
        empty[todo] = new == ""
        drop(plan, empty, ("reprompt: no_motion_in_caption: the re-extraction found no motion" + notes)
             .reindex(plan.index, fill_value=""))
    return changed
