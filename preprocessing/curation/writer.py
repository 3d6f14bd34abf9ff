"""The output stage: one Ray actor call writes one output shard from input shards' members.

A chunk's samples are copied member by member (members.py); only the json changes, and only
when the prompt was re-extracted or latents are added. The shard is written atomically with
preprocessing.shards.write_member_shard; the driver then commits the chunk by writing its part.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from preprocessing.curation.members import read_members, with_prompt
from preprocessing.shards import write_member_shard


def chunk_spec(out_dir: Path, chunk: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A picklable description of one output chunk (json, so Ray Data stores it as one string)."""
    samples = [{"src": str(Path(r["source"]) / r["source_shard"]), "key": r["key"],
                "prompt": r["motion_prompt"] if r["reprompted"] else None} for r in rows]
    return {"chunk": chunk, "spec": json.dumps({"out": str(out_dir), "shard": f"shards/shard-{chunk:06d}.tar",
                                                 "samples": samples})}


class ChunkWriter:
    """Ray Data actor (map_batches, batch_size=1): spec -> written shard. Holds the latent
    encoder when latents are on, so the autoencoder loads once per actor, not per chunk."""

    def __init__(self, latents_cfg: dict[str, Any] | None) -> None:
        self.encoder = None
        if latents_cfg is not None:
            from omegaconf import OmegaConf

            from preprocessing.curation.latents import LatentEncoder

            self.encoder = LatentEncoder(OmegaConf.create(latents_cfg))

    def _sample(self, item: dict[str, Any]) -> dict[str, bytes]:
        members = read_members(item["src"], item["key"])
        if item["prompt"] is not None:
            members["json"] = with_prompt(members["json"], item["prompt"])
        if self.encoder is not None:
            members = self.encoder.add_latents(item["key"], members)
        return {"__key__": item["key"], **members}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunks, counts, seconds = [], [], []
        for chunk, text in zip(batch["chunk"], batch["spec"]):
            began = time.perf_counter()
            spec = json.loads(str(text))
            count = write_member_shard(Path(spec["out"]) / spec["shard"], (self._sample(s) for s in spec["samples"]))
            chunks.append(int(chunk))
            counts.append(count)
            seconds.append(time.perf_counter() - began)
        return {"chunk": np.array(chunks), "count": np.array(counts), "seconds": np.array(seconds)}
