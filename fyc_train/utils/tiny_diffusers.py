"""Tiny random Stable Diffusion 1.5 + AnimateDiff folders, in the real diffusers layout.

    fyc-tiny-diffusers out/tiny_models        # -> out/tiny_models/stable-diffusion-v1-5 and
                                              #    out/tiny_models/motion-adapter
    fyc-train experiment=stage1_256 model.pretrained_path=out/tiny_models/stable-diffusion-v1-5 \
              model.motion_adapter_path=out/tiny_models/motion-adapter ...

The folders are written by the real classes' ``save_pretrained`` (``StableDiffusionPipeline``
with ``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel``, ``CLIPTokenizer`` and a
``DDPMScheduler``; ``MotionAdapter``), so every loader reads them exactly as it reads the real
stable-diffusion-v1-5 and animatediff-motion-adapter-v1-5-2 downloads: same file names, same
sub-folders, same config keys. Only the sizes are tiny (a few hundred thousand parameters) and
the weights random, so the SD1.5 code path (model=sd15, the stage experiments, export,
fyc-sample) runs on a CPU in seconds without downloading anything. The samples are noise.

The VAE keeps SD's 4 resolution levels (downscale factor 8, 4 latent channels, scaling factor
0.18215) so clip sizes and latent shapes follow the same rules as with the real model.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

SD_FOLDER = "stable-diffusion-v1-5"
ADAPTER_FOLDER = "motion-adapter"

TEXT_HIDDEN = 32
MAX_TOKENS = 16  # SD1.5: 77; the tiny tokenizer pads and truncates to 16


def tiny_unet_config() -> dict:
    """SD1.5's block types (cross-attention in every level but the last), 2 levels, tiny widths."""
    return dict(
        sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        cross_attention_dim=TEXT_HIDDEN, attention_head_dim=2,
    )


def tiny_adapter_config(unet_config: dict) -> dict:
    return dict(
        block_out_channels=tuple(unet_config["block_out_channels"]),
        motion_layers_per_block=unet_config["layers_per_block"], motion_num_attention_heads=2,
        motion_norm_num_groups=unet_config["norm_num_groups"], motion_max_seq_length=32,
        use_motion_mid_block=True,
    )


def write_clip_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer over lowercase letters, digits and a few whole words: vocab.json and
    merges.txt in CLIP's format (``</w>`` marks a word end), saved with ``CLIPTokenizer``."""
    from transformers import CLIPTokenizer

    symbols = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list(",.'-")
    words = ["move", "left", "right", "up", "down", "the", "a", "sway", "wave"]
    merges: list[tuple[str, str]] = []
    vocab: dict[str, int] = {}
    for token in ["<|startoftext|>", "<|endoftext|>", *symbols, *(s + "</w>" for s in symbols)]:
        vocab.setdefault(token, len(vocab))
    for word in words:  # merge left to right: m+o -> mo, mo+v -> mov, mov+e</w> -> move</w>
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merges.append((current, piece))
            current += piece
            vocab.setdefault(current, len(vocab))
    merges = list(dict.fromkeys(merges))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                              model_max_length=MAX_TOKENS)
    tokenizer.save_pretrained(str(folder))


def write_tiny_sd15(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random SD1.5-layout folder (model_index.json, unet/, vae/, text_encoder/,
    tokenizer/, scheduler/) with ``StableDiffusionPipeline.save_pretrained``."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    write_clip_tokenizer(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**tiny_unet_config())
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=32, layers_per_block=1,
            block_out_channels=(8, 8, 16, 16), norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        )  # scaling_factor: diffusers' default 0.18215, SD1.5's
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=TEXT_HIDDEN, intermediate_size=2 * TEXT_HIDDEN,
            num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ))
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, clip_sample=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def write_tiny_motion_adapter(folder: str | Path, seed: int = 1) -> Path:
    """Write a tiny random AnimateDiff ``MotionAdapter`` folder matching :func:`write_tiny_sd15`'s U-Net."""
    from diffusers import MotionAdapter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = MotionAdapter(**tiny_adapter_config(tiny_unet_config()))
    adapter.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


def write_tiny_models(out: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Both folders under ``out``: (``out/stable-diffusion-v1-5``, ``out/motion-adapter``)."""
    out = Path(out)
    return write_tiny_sd15(out / SD_FOLDER, seed), write_tiny_motion_adapter(out / ADAPTER_FOLDER, seed + 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fyc-tiny-diffusers",
        description="Write tiny random SD1.5 + AnimateDiff MotionAdapter folders (diffusers format) "
                    "for trying model=sd15 on a CPU. The weights are random: samples are noise.")
    parser.add_argument("out", type=Path, help=f"output folder (gets {SD_FOLDER}/ and {ADAPTER_FOLDER}/)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sd, adapter = write_tiny_models(args.out, args.seed)
    print(f"wrote {sd} and {adapter}\n"
          f"  fyc-train experiment=stage1_256 model.pretrained_path={sd} model.motion_adapter_path={adapter} ...")


if __name__ == "__main__":
    main()
