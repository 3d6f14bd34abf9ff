"""Step 4, dedupe: drop near-duplicate clips (same footage re-encoded, resized, lightly edited).

Signature of a clip: the perceptual hash (imagehash.phash, DCT-based: robust to re-encoding and
resizing) of `dedupe.frames` frames evenly spaced through the clip. Two clips are near-duplicates
when the Hamming distance of their signatures, averaged over frames, is at most
`dedupe.max_distance` bits. Rows are visited in merged order; a row near an earlier kept row is
dropped and its reason names that kept twin. Hashes are computed on Ray (one task per input
shard, reading only the mp4 members).

The search compares each clip with every kept clip, vectorised with numpy (imagehash has no index):
about 1e9 frame comparisons per second, so a 100k-clip corpus costs ~30 s here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from preprocessing.curation.members import read_members
from preprocessing.curation.plan import candidates, drop


def clip_signature(mp4: bytes, frames: int, hash_size: int, key: str = "?") -> np.ndarray:
    """(frames, hash_size**2 / 8) uint8: packed phash bits of evenly spaced frames."""
    import imagehash
    from PIL import Image

    from fyc_train.data.decode import decode_mp4

    video = decode_mp4(mp4, key)
    picks = np.linspace(0, len(video) - 1, frames).round().astype(int)
    bits = [imagehash.phash(Image.fromarray(video[i]), hash_size=hash_size).hash.flatten() for i in picks]
    return np.packbits(np.stack(bits), axis=1)


def hash_shard(item: dict[str, Any]) -> list[dict[str, Any]]:
    """Ray task: signatures of the listed keys of one input shard."""
    out = []
    for key in item["keys"]:
        sig = clip_signature(read_members(item["shard"], key)["mp4"], item["frames"], item["hash_size"], key)
        out.append({"source_index": item["source_index"], "key": key, "signature": sig.tobytes(),
                    "shape": list(sig.shape)})
    return out


def compute_signatures(plan: pd.DataFrame, cfg: Any) -> dict[tuple[int, str], np.ndarray]:
    import ray

    rows = plan.loc[candidates(plan)]
    items = [{"shard": f"{src}/{shard}", "source_index": int(idx), "keys": list(group["key"]),
              "frames": int(cfg.frames), "hash_size": int(cfg.hash_size)}
             for (src, idx, shard), group in rows.groupby(["source", "source_index", "source_shard"], sort=True)]
    if not items:
        return {}
    ds = ray.data.from_items(items, override_num_blocks=len(items)).flat_map(hash_shard)
    found = {}
    for r in ds.iter_rows():
        found[(int(r["source_index"]), r["key"])] = np.frombuffer(r["signature"], np.uint8).reshape(r["shape"])
    return found


def dedupe(plan: pd.DataFrame, signatures: dict[tuple[int, str], np.ndarray], max_distance: float) -> int:
    """Drop candidates within `max_distance` (mean bits per frame) of an earlier kept candidate."""
    todo = plan.index[candidates(plan)]
    if len(todo) == 0:
        return 0
    sigs = np.stack([signatures[(int(plan.at[i, "source_index"]), plan.at[i, "key"])] for i in todo])
    frames = sigs.shape[1]
    kept: list[int] = []  # positions into todo
    reasons = pd.Series("", index=plan.index)
    for pos, idx in enumerate(todo):
        if kept:
            dist = np.bitwise_count(sigs[kept] ^ sigs[pos]).sum(axis=(1, 2)) / frames
            nearest = int(np.argmin(dist))
            if dist[nearest] <= max_distance:
                twin = todo[kept[nearest]]
                reasons[idx] = (f"dedupe: near-duplicate of {plan.at[twin, 'key']} (input {plan.at[twin, 'source_index']}"
                                f" row {plan.at[twin, 'source_row_index']}, kept), mean phash distance "
                                f"{dist[nearest]:.1f} bits per frame <= dedupe.max_distance={max_distance:g}")
                continue
        kept.append(pos)
    return drop(plan, reasons != "", reasons)
