"""Step 3, select: keep the candidate rows matching `select.query` (a pandas query over the
input manifest's columns, e.g. `magnitude > 1.5 and direction == "left"`)."""

from __future__ import annotations

import pandas as pd

from preprocessing.config import ConfigError
from preprocessing.curation.plan import candidates, drop

CURATION_COLUMNS = ("curation", "curation_reason", "reprompted")


def apply_query(plan: pd.DataFrame, query: str | None) -> int:
    """Drop candidates not matching `query`; returns how many. Raises ConfigError naming the key,
    the pandas error and the columns a query can use."""
    if query is None:
        return 0
    rows = plan.loc[candidates(plan)].drop(columns=list(CURATION_COLUMNS))
    try:
        matched = rows.eval(query, engine="python")
    except Exception as exc:  # pandas raises many types (UndefinedVariableError, SyntaxError, TypeError, ...)
        raise ConfigError(f"select.query={query!r} does not evaluate: {type(exc).__name__}: {exc}; "
                          f"columns: {', '.join(map(str, rows.columns))}") from exc
    if not isinstance(matched, pd.Series) or matched.dtype != bool:
        raise ConfigError(f"select.query={query!r} must give one True/False per row (a condition such as "
                          f"`magnitude > 1`), got {type(matched).__name__} "
                          f"{getattr(matched, 'dtype', '')}".rstrip())
    keep = pd.Series(False, index=plan.index)
    keep[matched.index] = matched
    return drop(plan, ~keep, f"select: does not match select.query `{query}`")
