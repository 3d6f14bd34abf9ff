"""speed=slow|medium|fast -> a magnitude from the training data's magnitude distribution.

Magnitudes are pixels per sampled-frame step at the flow resolution, so a raw number means
little to a person; quantiles of what training saw (stored with the checkpoint as
{quantile: value}, e.g. {"0.0": .., "0.1": .., "0.5": .., "0.9": .., "1.0": ..}) do.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

log = logging.getLogger(__name__)

SPEED_QUANTILES = {"slow": 0.2, "medium": 0.5, "fast": 0.8}
DEFAULT_MAGNITUDE = 8.0  # the paper's figures use 4, 8, 12, 16


def _sorted(quantiles: Mapping) -> tuple[np.ndarray, np.ndarray]:
    qs = np.array([float(q) for q in quantiles], dtype=np.float64)
    vs = np.array([float(v) for v in quantiles.values()], dtype=np.float64)
    order = np.argsort(qs)
    return qs[order], vs[order]


def resolve_magnitude(
    magnitude: float | None, speed: str | None, quantiles: Mapping | None
) -> float:
    """Raw `magnitude` wins; else `speed` via the quantiles; else the median (or 8.0).

    Warns when the value lies outside the range training saw (the stored min..max, or the
    extreme stored quantiles).
    """
    if speed is not None and speed not in SPEED_QUANTILES:
        raise ValueError(f"speed={speed}: choose slow, medium or fast (or set magnitude=).")
    if magnitude is None:
        if quantiles:
            qs, vs = _sorted(quantiles)
            value = float(np.interp(SPEED_QUANTILES[speed or "medium"], qs, vs))
        else:
            if speed is not None:
                raise ValueError(
                    f"speed={speed} needs the training data's magnitude quantiles, and this "
                    "checkpoint has none: set magnitude=FLOAT instead."
                )
            value = DEFAULT_MAGNITUDE
            log.warning("checkpoint stores no magnitude quantiles: using magnitude=%g", value)
    else:
        value = float(magnitude)
    if quantiles:
        qs, vs = _sorted(quantiles)
        lo, hi = vs[0], vs[-1]
        if not lo <= value <= hi:
            log.warning(
                "magnitude=%g is outside what training saw (%.3g..%.3g, quantiles %g..%g): "
                "expect the model to extrapolate poorly.", value, lo, hi, qs[0], qs[-1],
            )
    return value
