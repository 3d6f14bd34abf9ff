"""Export/import round trips, components, and the from-folder SD1.5 + AnimateDiff path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from fyc_train.models import (ModelFolderError, PixelUnshuffleAutoencoder, TinyTextEncoder, assemble_input,
                              build_sd15, build_tiny, load_fyc_model, load_fyc_unet, save_fyc_model,
                              save_fyc_unet)
from fyc_train.models.build import tiny_adapter_config, tiny_unet2d_config
from fyc_train.models.motion_augment import motion_augment_modules

torch.set_num_threads(1)
TEXT = {"hidden_size": 32}


def _run(model, seed=0, frames=4):
    g = torch.Generator().manual_seed(seed)
    c, s = model.latent_channels, 16 // model.downscale_factor
    z = torch.randn(1, c, frames, s, s, generator=g)
    x = assemble_input(z, torch.ones(1, 1, s, s), z[:, :, 0])
    ehs, mhs = model.text_conditioning(["a red disc"], ["move up"])
    with torch.no_grad():
        return model.unet(x, torch.tensor([321]), ehs, mhs, magnitude=torch.tensor([5.0]))


def _perturb_new_layers(model):
    with torch.no_grad():
        for m in motion_augment_modules(model.unet.unet) + [model.unet.magnitude_embedding]:
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.1)


def test_pixel_unshuffle_round_trip_is_exact():
    ae = PixelUnshuffleAutoencoder(factor=4, scale=0.5)
    x = torch.rand(3, 3, 32, 24) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (3, ae.latent_channels, 8, 6) and ae.latent_channels == 48 and ae.downscale_factor == 4
    assert torch.equal(ae.decode(z), x)
    with pytest.raises(ValueError, match="divisible"):
        ae.encode(torch.zeros(1, 3, 30, 30))


def test_tiny_text_encoder_is_seeded_and_frozen():
    a, b, c = TinyTextEncoder(seed=1, **TEXT), TinyTextEncoder(seed=1, **TEXT), TinyTextEncoder(seed=2, **TEXT)
    texts = ["move left", "", "a much longer caption " * 5]
    ea = a.encode(texts)
    assert ea.shape == (3, 32, 32) and not ea.requires_grad
    assert torch.equal(ea, b.encode(texts)) and not torch.equal(ea, c.encode(texts))
    assert not torch.equal(ea[0], ea[1])  # "" is its own (unconditional) embedding
    assert a.tokenizer.decode(a.tokenizer.encode("move left")) == "move left"
    assert not any(p.requires_grad for p in a.parameters())


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    model = build_tiny(image_size=16, text=TEXT, fyc={"fps_embedding": True, "channel_order": "noisy_first_mask"})
    _perturb_new_layers(model)
    before = _run(model)
    save_fyc_model(model, tmp_path / "export")
    assert (tmp_path / "export/unet/diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((tmp_path / "export/unet/fyc_config.json").read_text())["channel_order"] == "noisy_first_mask"
    loaded = load_fyc_model(tmp_path / "export")
    assert loaded.config == model.config and loaded.trainable == model.trainable
    assert torch.equal(_run(loaded), before)
    sd_a, sd_b = model.state_dict(), loaded.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    # the unet folder is a diffusers UNetMotionModel too (FYC layers reported as extra keys)
    plain = UNetMotionModel.from_pretrained(str(tmp_path / "export/unet"), local_files_only=True)
    assert plain.conv_in.in_channels == 2 * model.latent_channels + 1


def test_stage1_export_initialises_stage2_with_zero_ma(tmp_path):
    stage1 = build_tiny(image_size=16, text=TEXT, fyc={"motion_augment": False})
    save_fyc_unet(stage1.unet, tmp_path / "s1")
    with pytest.raises(ModelFolderError, match="missing"):
        load_fyc_unet(tmp_path / "s1", config_overrides={"motion_augment": True, "motion_context_dim": 32})
    unet = load_fyc_unet(tmp_path / "s1", config_overrides={"motion_augment": True, "motion_context_dim": 32},
                         strict=False)
    assert motion_augment_modules(unet.unet)
    assert all((m.attn.to_out[0].weight == 0).all() for m in motion_augment_modules(unet.unet))


def test_load_errors_name_the_folder_and_files(tmp_path):
    with pytest.raises(ModelFolderError, match=r"does not exist.*fyc_model.json"):
        load_fyc_model(tmp_path / "nope")
    (tmp_path / "half/unet").mkdir(parents=True)
    (tmp_path / "half/unet/config.json").write_text("{}")
    with pytest.raises(ModelFolderError, match=r"half/unet is incomplete: missing diffusion_pytorch_model.safetensors"):
        load_fyc_unet(tmp_path / "half/unet")


def _write_clip_tokenizer(folder: Path) -> None:
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab: dict[str, int] = {}
    for tok in ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars), "mo", "mov", "move</w>"]:
        vocab.setdefault(tok, len(vocab))
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\nm o\nmo v\nmov e</w>\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tok.model_max_length = 16
    tok.save_pretrained(str(folder))


@pytest.fixture(scope="module")
def sd_folders(tmp_path_factory):
    """A tiny but real "SD1.5-shaped" diffusers folder + MotionAdapter, written with save_pretrained."""
    root = tmp_path_factory.mktemp("sd")
    torch.manual_seed(0)
    ucfg = tiny_unet2d_config(4, 32, sample_size=8)
    UNet2DConditionModel(**ucfg).save_pretrained(str(root / "sd/unet"))
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                  sample_size=16).save_pretrained(str(root / "sd/vae"))
    CLIPTextModel(CLIPTextConfig(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=16)).save_pretrained(
        str(root / "sd/text_encoder"))
    _write_clip_tokenizer(root / "sd/tokenizer")
    MotionAdapter(**tiny_adapter_config(ucfg)).save_pretrained(str(root / "adapter"))
    return root


def test_build_sd15_from_local_folders(sd_folders, tmp_path):
    model = build_sd15(str(sd_folders / "sd"), str(sd_folders / "adapter"), gradient_checkpointing=False)
    assert model.latent_channels == 4 and model.downscale_factor == 2
    assert model.autoencoder.scaling_factor == 0.18215
    ids = model.text_encoder.tokenize(["move", ""])
    assert ids.shape == (2, 16) and ids[0, 1] != ids[1, 1]
    src = UNet2DConditionModel.from_pretrained(str(sd_folders / "sd/unet"))
    w = model.unet.unet.conv_in
    assert torch.equal(w.weight[:, :4], src.conv_in.weight) and torch.equal(w.bias, src.conv_in.bias)
    adapter = MotionAdapter.from_pretrained(str(sd_folders / "adapter"))
    a = adapter.down_blocks[0].motion_modules[0].transformer_blocks[0].attn1.to_q.weight
    assert torch.equal(model.unet.unet.down_blocks[0].motion_modules[0].transformer_blocks[0].attn1.to_q.weight, a)
    assert not any(p.requires_grad for p in model.autoencoder.parameters())
    video = torch.rand(1, 4, 3, 16, 16) * 2 - 1
    z = model.encode_video(video)
    assert z.shape == (1, 4, 4, 8, 8) and model.decode_latents(z).shape == video.shape
    out = _run(model)
    assert out.shape == (1, 4, 4, 8, 8) and torch.isfinite(out).all()
    _perturb_new_layers(model)
    save_fyc_model(model, tmp_path / "sd_export")
    assert torch.equal(_run(load_fyc_model(tmp_path / "sd_export")), _run(model))


@pytest.mark.parametrize("broken, message", [
    ("sd/vae/diffusion_pytorch_model.safetensors", r"vae is incomplete: missing diffusion_pytorch_model"),
    ("sd/tokenizer", r"tokenizer does not exist"),
    ("adapter/config.json", r"adapter is incomplete: missing config.json"),
])
def test_build_sd15_errors_name_the_missing_piece(sd_folders, tmp_path, broken, message):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(sd_folders, copy)
    target = copy / broken
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(FileNotFoundError, match=message):
        build_sd15(str(copy / "sd"), str(copy / "adapter"))
    with pytest.raises(FileNotFoundError, match="unet/, vae/, text_encoder/ and tokenizer/"):
        build_sd15(str(tmp_path / "missing"), str(copy / "adapter"))
