"""Training steps/s from video shards against precomputed-latent shards, same model, one run.

The model: the tiny FYC U-Net with 4 latent channels (SD's) and Stable Diffusion 1.5's VAE
architecture (AutoencoderKL with SD1.5's config, random weights: the cost is the architecture's,
not the weights'). Video shards cost per step: mp4 decode + VAE encode of every frame + U-Net
step; latent shards (made by fyc-curate's latents stage, preprocessing/curation/latents.py,
with the same VAE saved as a diffusers folder) cost .npy load + U-Net step. Both go through the
real training loader (FYCDataModule, num_workers=0, so everything is timed in this process).

    python bench/bench_latents.py                      # CPU: 4 frames of 128x128, 3 timed steps each
    python bench/bench_latents.py --size 256 --frames 8 --device cuda
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512],
                layers_per_block=2, down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, norm_num_groups=32, sample_size=512,
                scaling_factor=0.18215)


def sd15_vae_folder(root: Path) -> Path:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(**SD15_VAE).save_pretrained(root / "sd" / "vae")
    return root / "sd"


def build_model(vae_root: Path, size: int):
    from fyc_train.models.autoencoder import SDAutoencoder
    from fyc_train.models.build import build_unet_from_configs, tiny_adapter_config, tiny_unet2d_config
    from fyc_train.models.fyc_model import FYCModel
    from fyc_train.models.text import TinyTextEncoder

    ae = SDAutoencoder.from_folder(vae_root)
    text = TinyTextEncoder()
    unet_cfg = tiny_unet2d_config(4, text.hidden_size, sample_size=size // ae.downscale_factor)
    unet = build_unet_from_configs(unet_cfg, tiny_adapter_config(unet_cfg),
                                   {"latent_channels": 4, "motion_context_dim": text.hidden_size})
    return FYCModel(unet, ae, text, trainable="unet")


def make_latent_shards(video_shards: list[str], out: Path, vae_root: Path) -> list[str]:
    """The fyc-curate latents stage (same code), run in-process on each video shard."""
    from omegaconf import OmegaConf

    from preprocessing.curation.config import LatentsConfig
    from preprocessing.curation.latents import LatentEncoder
    from preprocessing.curation.members import read_members, shard_index
    from preprocessing.shards import write_member_shard

    cfg = OmegaConf.structured(LatentsConfig(enabled=True, autoencoder="sd_vae", vae_path=str(vae_root)))
    encoder = LatentEncoder(cfg)
    paths = []
    for shard in video_shards:
        path = out / Path(shard).name
        keys = list(shard_index(shard))
        write_member_shard(path, ({"__key__": k, **encoder.add_latents(k, read_members(shard, k))} for k in keys))
        paths.append(str(path))
    return paths


class Trainer:
    """One training source: its loader and a copy of the module + optimizer (same init)."""

    def __init__(self, model, shards: list[str], frames: int, steps: int, device: str) -> None:
        import copy

        from fyc_train.data import FYCDataModule
        from fyc_train.lit_module import FYCLitModule

        self.lit = FYCLitModule(copy.deepcopy(model)).to(device)
        self.opt = torch.optim.AdamW(self.lit.trainable_parameters(), lr=1e-4)
        dm = FYCDataModule(shards, batch_size=1, num_workers=0, num_frames=frames, steps_per_epoch=steps + 1,
                           pin_memory=False)
        dm.setup("fit")
        self.loader = iter(dm.train_dataloader())
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.seconds: list[float] = []

    def step(self) -> None:
        """loader (mp4 decode or .npy) + autoencoder (video only) + U-Net forward/backward + AdamW."""
        began = time.perf_counter()
        loss = self.lit.compute_loss(next(self.loader), self.gen, train=True)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.seconds.append(time.perf_counter() - began)


def interleaved_rates(model, video: list[str], latent: list[str], frames: int, steps: int,
                      device: str) -> tuple[float, float]:
    """Steps/s of each source, timed step by step in alternation (V, L, V, L, ...) so that load
    from other processes on a shared machine falls on both alike; medians of the per-step times."""
    import statistics

    runs = [Trainer(model, shards, frames, steps, device) for shards in (video, latent)]
    for run in runs:  # warm-up step, not timed
        run.step()
        run.seconds.clear()
    for _ in range(steps):
        for run in runs:
            run.step()
    return tuple(1.0 / statistics.median(run.seconds) for run in runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=128, help="clip H = W in pixels")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="timed steps per source (after one warm-up)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    from fyc_train.utils.synthetic_shards import write_shards

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        vae_root = sd15_vae_folder(root)
        video = write_shards(root / "video", num_shards=2, per_shard=args.steps + 1, num_frames=args.frames,
                             size=args.size)
        began = time.perf_counter()
        latent = make_latent_shards(video, root / "latents", vae_root)
        made_s = time.perf_counter() - began
        model = build_model(vae_root, args.size)
        video_rate, latent_rate = interleaved_rates(model, video, latent, args.frames, args.steps, args.device)
    clips = 2 * (args.steps + 1)
    print(json.dumps({
        "device": args.device, "clip": [args.frames, args.size, args.size], "vae": "SD1.5 AutoencoderKL config",
        "video_steps_per_s": round(video_rate, 4), "latent_steps_per_s": round(latent_rate, 4),
        "speedup": round(latent_rate / video_rate, 2),
        "latents_made_clips_per_s": round(clips / made_s, 4),
    }, indent=2))


if __name__ == "__main__":
    main()
