"""FYCPipeline and fyc-sample on a tiny model trained a few steps with FYCLitModule + EMA.

The checkpoint is written by Lightning exactly as fyc-train writes it (state_dict, EMA callback
state, checkpoint["fyc"]), so these tests read the real format.
"""
from __future__ import annotations

import subprocess
from fractions import Fraction
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from fyc_train.callbacks.ema import EMACallback
from fyc_train.lit_module import FYCLitModule
from fyc_train.sampling.checkpoint_loading import load_for_sampling
from fyc_train.sampling.masks import SamplingInputError
from fyc_train.sampling.pipeline import FYCPipeline
from fyc_train.sampling.sam import build_tiny_sam
from fyc_train.sampling.video_io import read_video

torch.set_num_threads(1)
SIZE, FRAMES, STEPS = 32, 8, 4
MODEL_CONFIG = {
    "_target_": "fyc_train.models.build_tiny", "image_size": SIZE, "seed": 0,
    "text": {"hidden_size": 32, "num_layers": 1, "max_length": 16},
}
QUANTILES = {"0.0": 0.5, "0.2": 1.0, "0.5": 2.0, "0.8": 3.0, "1.0": 4.0}


def moving_square_batch(step: int, batch: int = 2) -> dict:
    """A textured background with a square moving right by 1 px/frame (what training sees)."""
    g = torch.Generator().manual_seed(step)
    bg = torch.rand(batch, 1, 3, SIZE, SIZE, generator=g) * 0.6 - 0.8
    video = bg.expand(-1, FRAMES, -1, -1, -1).clone()
    mask = torch.zeros(batch, 1, SIZE, SIZE)
    for f in range(FRAMES):
        video[:, f, :, 10:18, 6 + f : 14 + f] = 0.9
    mask[:, :, 10:18, 6 : 14 + FRAMES] = 1
    return {"video": video, "mask": mask, "caption": ["a square"] * batch,
            "motion_prompt": ["move right"] * batch, "magnitude": torch.full((batch,), 1.0),
            "stride": torch.ones(batch), "key": [f"k{step}_{i}" for i in range(batch)]}


class _Quantiles(pl.LightningDataModule):
    magnitude_quantiles = QUANTILES

    def train_dataloader(self):
        batches = [moving_square_batch(i) for i in range(6)]
        return torch.utils.data.DataLoader(batches, batch_size=None)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    from hydra.utils import instantiate

    out = tmp_path_factory.mktemp("tiny_fyc")
    torch.manual_seed(0)
    module = FYCLitModule(instantiate(MODEL_CONFIG), lr=1e-3, model_config=MODEL_CONFIG)
    trainer = pl.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[EMACallback(decay=0.9)],
                         enable_model_summary=False)
    trainer.fit(module, datamodule=_Quantiles())
    path = out / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def loaded(tiny_ckpt):
    return load_for_sampling(tiny_ckpt)


@pytest.fixture(scope="session")
def pipe(loaded):
    return FYCPipeline(loaded.model, loaded.scheduler(), layout=loaded.layout, default_num_frames=FRAMES)


def _scene() -> tuple[np.ndarray, np.ndarray]:
    batch = moving_square_batch(99, 1)
    img = ((batch["video"][0, 0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    return img, batch["mask"][0, 0].numpy() > 0


def _run(pipe, **kw):
    img, mask = _scene()
    args = dict(image=img, mask=mask, prompt="move right", magnitude=2.0, num_frames=FRAMES,
                steps=STEPS, seed=3, progress=False)
    args.update(kw)
    return pipe(**args)


def test_checkpoint_carries_sampling_metadata(loaded, tiny_ckpt):
    assert loaded.magnitude_quantiles == QUANTILES
    assert loaded.scheduler().config.prediction_type == "v_prediction"
    assert loaded.scheduler().config.timestep_spacing == "trailing"
    assert loaded.scheduler().config.rescale_betas_zero_snr
    raw = load_for_sampling(tiny_ckpt, use_ema=False).model
    ema_p = dict(loaded.model.named_parameters())
    diffs = [n for n, p in raw.named_parameters() if p.requires_grad and not torch.equal(p, ema_p[n])]
    assert diffs, "use_ema=false must give the raw weights, different from the EMA average"


def test_same_seed_same_video_and_shape(pipe):
    a, b = _run(pipe), _run(pipe)
    assert a.dtype == np.uint8 and a.shape == (FRAMES, SIZE, SIZE, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, _run(pipe, seed=4))
    assert _run(pipe, num_frames=6).shape == (6, SIZE, SIZE, 3)


def test_first_frame_follows_the_input(pipe):
    img, _ = _scene()
    rand = np.random.default_rng(0).integers(0, 256, img.shape).astype(float)
    imposed = _run(pipe)[0].astype(float)
    assert ((imposed - img) ** 2).mean() < 1.0  # exact autoencoder: re-imposed frame 0 is the input
    pipe.impose_first_frame = False
    try:
        own = _run(pipe)[0].astype(float)  # what the few-step model reconstructs by itself
    finally:
        pipe.impose_first_frame = True
    assert ((own - img) ** 2).mean() < ((rand - img) ** 2).mean()


def test_mask_and_prompts_change_the_video(pipe):
    img, mask = _scene()
    other = np.zeros_like(mask)
    other[20:28, 2:10] = True
    base = _run(pipe)
    assert not np.array_equal(base, _run(pipe, mask=other))
    assert not np.array_equal(base, _run(pipe, prompt="move left"))


def test_several_regions(pipe):
    img, mask = _scene()
    other = np.zeros_like(mask)
    other[22:30, 2:10] = True
    both = np.stack([mask, other])
    union = _run(pipe, mask=both)  # one prompt: regions animated together (union)
    assert np.array_equal(union, _run(pipe, mask=mask | other))
    per_region = _run(pipe, mask=both, prompt=["move right", "move up"])
    assert per_region.shape == (FRAMES, SIZE, SIZE, 3)
    assert not np.array_equal(per_region, union)
    with pytest.raises(SamplingInputError, match="one prompt per region"):
        _run(pipe, mask=both, prompt=["a", "b", "c"])
    with pytest.raises(SamplingInputError, match="empty"):
        _run(pipe, mask=np.zeros_like(mask))


# ---- fyc-sample, the command a user runs ----------------------------------------------------

def _cli(tmp_path, *overrides) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).with_name("fyc-sample")),
           f"steps={STEPS}", f"num_frames={FRAMES}", "fps=4", *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    img, mask = _scene()
    Image.fromarray(img).save(d / "image.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(d / "mask.png")
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(d / "empty.png")
    big = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((2 * SIZE, 2 * SIZE), Image.NEAREST))
    Image.fromarray(big).save(d / "big_mask.png")
    (d / "junk.png").write_bytes(b"no image here")
    torch.save(build_tiny_sam().state_dict(), d / "tiny_sam.pth")
    return {p.stem: p for p in d.iterdir()}


@pytest.mark.slow
def test_cli_mask_to_mp4_and_contact_sheet(tmp_path, tiny_ckpt, inputs):
    r = _cli(tmp_path, f"checkpoint={tiny_ckpt}", f"image={inputs['image']}", f"mask={inputs['big_mask']}",
             "prompt=move right", "speed=fast", "output=out/v.mp4")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "resizing the mask" in r.stdout + r.stderr
    video = read_video(tmp_path / "out/v.mp4")
    assert video.shape == (FRAMES, SIZE, SIZE, 3)
    sheet = Image.open(tmp_path / "out/v_sheet.png")
    assert sheet.width >= 8 * 128
    assert "magnitude 3 (speed=fast)" in r.stdout + r.stderr  # the 0.8 quantile stored in training


@pytest.mark.slow
def test_cli_clicks_with_tiny_sam_to_gif(tmp_path, tiny_ckpt, inputs):
    r = _cli(tmp_path, f"checkpoint={tiny_ckpt}", f"image={inputs['image']}", "clicks=[[12,14],[28,4]]",
             "labels=[1,0]", f"sam.checkpoint={inputs['tiny_sam']}", "prompt=move right",
             "magnitude=2", "use_ema=false", "output=v.gif")
    if r.returncode != 0 and "SAM mask (click elsewhere) is empty" in r.stderr + r.stdout:
        pytest.fail("random tiny SAM gave an empty mask for this click; pick another click")
    assert r.returncode == 0, r.stderr + r.stdout
    assert len(read_video(tmp_path / "v.gif")) == FRAMES


BAD_INPUTS = [
    (["image={missing}"], "no such file"),
    (["image={junk}"], "cannot be read"),
    (["mask={empty}"], "empty"),
    (["mask=null", "click=[40,3]"], "outside the image"),
    (["mask=null", "click=[4,3]"], "sam.checkpoint="),
    (["checkpoint={junk}"], "unknown checkpoint format"),
    (["speed=warp"], "slow, medium or fast"),
    (["output=v.avi"], ".mp4 or .gif"),
    (["mask=null"], "say what moves"),
    (["prompt=[a,b]"], "2 prompts for 1 regions"),
]


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from fyc_train.cli.sample import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("sample", overrides=overrides)


@pytest.mark.parametrize("overrides,message", BAD_INPUTS)
def test_bad_input_fails_before_model_work(tmp_path, inputs, overrides, message, monkeypatch):
    from fyc_train.cli import sample as cli

    loads = []
    monkeypatch.setattr(cli, "load_for_sampling", lambda *a, **k: loads.append(a))  # spy only
    names = {**{k: str(v) for k, v in inputs.items()}, "missing": str(tmp_path / "nope.png")}
    (tmp_path / "m.ckpt").write_bytes(b"")
    base = {"checkpoint": str(tmp_path / "m.ckpt"), "image": names["image"], "mask": names["mask"],
            "prompt": "move right", "output": str(tmp_path / "v.mp4")}
    for o in overrides:
        key, value = o.split("=", 1)
        base[key] = value.format(**names)
    cfg = _compose([f"{k}={v}" for k, v in base.items()])
    with pytest.raises((SamplingInputError, ValueError)) as err:
        cli.run(cfg)
    assert message in str(err.value)
    assert not loads, "the model must not be loaded for bad input"


@pytest.mark.slow
def test_cli_refuses_pickled_checkpoint_with_exit_code(tmp_path, inputs):
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "why": Fraction(1, 3)}, pickled)
    r = _cli(tmp_path, f"checkpoint={pickled}", f"image={inputs['image']}", f"mask={inputs['mask']}",
             "prompt=move right", "output=v.mp4")
    assert r.returncode == 2, r.stderr + r.stdout
    assert "pickled Python objects" in r.stderr + r.stdout
    assert not (tmp_path / "v.mp4").exists()


def test_exported_folder_samples_the_same_video(tmp_path, tiny_ckpt, loaded, pipe):
    from fyc_train.models.export import save_fyc_model
    from fyc_train.sampling.checkpoint_loading import save_sampling_metadata

    folder = save_fyc_model(loaded.model, tmp_path / "export")
    save_sampling_metadata(folder, loaded)
    again = load_for_sampling(folder)
    assert again.magnitude_quantiles == QUANTILES and again.layout == loaded.layout
    pipe2 = FYCPipeline(again.model, again.scheduler(), layout=again.layout, default_num_frames=FRAMES)
    assert np.array_equal(_run(pipe), _run(pipe2))
