"""The U-Net's first-frame skip (``fyc.first_frame_skip``, the MovingShapes recipe): with it, a
U-Net whose own output is zero already predicts the still video "first frame on every frame",
in training's loss and in the sampling pipeline; without it, the same U-Net predicts grey."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fyc_train.lit_module import FYCLitModule
from fyc_train.models.build import build_tiny
from fyc_train.models.first_frame import assemble_input, noise_sigma
from fyc_train.models.unet import FYCUNetConfig
from fyc_train.sampling.pipeline import FYCPipeline, make_scheduler

torch.set_num_threads(1)
SIZE, FRAMES = 32, 4


def tiny(skip: bool | str, first_frame_frames: str = "all", silent_unet: bool = True):
    model = build_tiny(image_size=SIZE, autoencoder={"factor": 2}, unet={"block_out_channels": [16, 32]},
                       fyc={"first_frame_skip": skip, "first_frame_frames": first_frame_frames})
    if silent_unet:  # the diffusers U-Net itself outputs 0: what is left is the skip
        with torch.no_grad():
            model.unet.unet.conv_out.weight.zero_()
            model.unet.unet.conv_out.bias.zero_()
    return model.eval()


def textured_image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def still_batch() -> dict:
    video = torch.from_numpy(textured_image()).permute(2, 0, 1).float() / 127.5 - 1
    video = video[None, None].expand(2, FRAMES, -1, -1, -1).clone()
    mask = torch.zeros(2, 1, SIZE, SIZE)
    mask[:, :, 8:16, 8:16] = 1
    return {"video": video, "mask": mask, "caption": ["a picture"] * 2, "motion_prompt": ["sway"] * 2,
            "magnitude": torch.tensor([2.0, 4.0]), "stride": torch.ones(2)}


@pytest.mark.parametrize("first_frame_frames", ["all", "first"])
def test_one_step_sample_of_a_silent_unet_is_the_still_first_frame(first_frame_frames):
    image = textured_image()
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[8:16, 8:16] = True
    error = {}
    for skip, clean_last_step in ((True, True), (True, False), (False, True)):
        pipe = FYCPipeline(tiny(skip, first_frame_frames), scheduler=make_scheduler(clean_last_step=clean_last_step),
                           impose_first_frame=False, default_num_frames=FRAMES)
        pipe.layout.first_frame_frames = first_frame_frames
        video = pipe(image, mask, "sway", steps=1, guidance=1.0, seed=0, progress=False)
        error[skip, clean_last_step] = np.abs(video.astype(float) - image[None])
    # with the skip every frame is the input (uint8 rounding only) ...
    assert error[True, True].max() <= 1
    # ... unless DDIM's last step lands on alpha_bar_0 < 1 and keeps sqrt(1 - alpha_bar_0) ~ 0.03
    # of the noise (~3.7 grey levels at 1.0 latent scale) ...
    assert 2.0 < error[True, False].mean() < 4.0
    # ... and without the skip the same zero U-Net output decodes to a flat grey video
    assert error[False, True].mean() > 40


def test_skip_makes_the_still_video_a_zero_loss_at_pure_noise():
    batch = still_batch()
    losses = {}
    for skip in (True, False):
        module = FYCLitModule(tiny(skip), timestep_power=1e9)  # every t = T-1: alpha_bar = 0
        losses[skip] = module.compute_loss(batch, torch.Generator().manual_seed(0), train=False).item()
    assert losses[True] < 1e-10
    assert losses[False] > 0.1


def test_skip_adds_sigma_times_the_first_latent_and_the_unet_still_sees_everything():
    model = tiny(True, silent_unet=False)
    g = torch.Generator().manual_seed(3)
    noisy = torch.randn(2, model.latent_channels, FRAMES, 16, 16, generator=g)
    first = torch.randn(2, model.latent_channels, 16, 16, generator=g)
    x = assemble_input(noisy, torch.zeros(2, 1, 16, 16), first, first_frame_frames="all")
    text = model.encode_text(["", ""])
    t = torch.tensor([999, 400])
    sigma = noise_sigma(make_scheduler().alphas_cumprod, t)
    assert sigma[0] == pytest.approx(1.0) and 0 < sigma[1] < 1
    with torch.no_grad():
        out = model.unet(x, t, text, text, magnitude=torch.tensor([2.0, 2.0]), noise_sigma=sigma)
        model.unet.config.first_frame_skip = "first"
        first_only = model.unet(x, t, text, text, magnitude=torch.tensor([2.0, 2.0]), noise_sigma=sigma)
        model.unet.config.first_frame_skip = "none"
        plain = model.unet(x, t, text, text, magnitude=torch.tensor([2.0, 2.0]))
    expected = plain - sigma.view(2, 1, 1, 1, 1) * first[:, :, None]
    torch.testing.assert_close(out, expected)
    # "first": frame 0 gets the skip, every later frame is the plain U-Net output
    torch.testing.assert_close(first_only[:, :, :1], expected[:, :, :1])
    torch.testing.assert_close(first_only[:, :, 1:], plain[:, :, 1:])


def test_first_frame_only_skip_samples_the_input_as_frame_0_and_grey_after():
    image = textured_image()
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[8:16, 8:16] = True
    pipe = FYCPipeline(tiny("first"), scheduler=make_scheduler(clean_last_step=True), impose_first_frame=False,
                       default_num_frames=FRAMES)
    video = pipe(image, mask, "sway", steps=1, guidance=1.0, seed=0, progress=False).astype(float)
    assert np.abs(video[0] - image).max() <= 1
    assert np.abs(video[1:] - image[None]).mean() > 40  # a silent U-Net draws grey after frame 0


@pytest.mark.parametrize(("value", "normalised", "active"),
                         [(False, "none", False), (True, "all", True), ("none", "none", False),
                          ("first", "first", True), ("all", "all", True), ("gated", "gated", True),
                          ("blend", "blend", True)])
def test_skip_setting_accepts_session_5_booleans(value, normalised, active):
    config = FYCUNetConfig(first_frame_skip=value)
    assert config.first_frame_skip == normalised and config.has_first_frame_skip is active
    assert FYCUNetConfig.from_dict(config.to_dict()) == config


def test_unknown_skip_setting_names_the_choices():
    with pytest.raises(ValueError, match=r"first_frame_skip='frist'.*\['none', 'first', 'all', 'gated', 'blend', 'blend_all'\]"):
        FYCUNetConfig(first_frame_skip="frist")


def test_skip_needs_the_noise_level_and_v_prediction():
    model = tiny(True)
    x = assemble_input(torch.zeros(1, model.latent_channels, FRAMES, 16, 16), torch.zeros(1, 1, 16, 16),
                       torch.zeros(1, model.latent_channels, 16, 16), first_frame_frames="all")
    with pytest.raises(ValueError, match="noise_sigma"):
        model.unet(x, torch.tensor([10]), model.encode_text([""]), None)
    with pytest.raises(ValueError, match="v_prediction"):
        FYCLitModule(model, prediction_type="epsilon")
    with pytest.raises(ValueError, match="first_frame_skip"):
        FYCPipeline(model, scheduler=make_scheduler({"prediction_type": "epsilon"}))


def set_gate(model, logit: float) -> None:
    """Force the gated U-Net's copy gate to sigmoid(logit) everywhere."""
    conv = model.unet.unet.conv_out
    with torch.no_grad():
        conv.weight[model.latent_channels:].zero_()
        conv.bias[model.latent_channels:].fill_(logit)


def test_gated_skip_is_first_with_the_gate_shut_and_all_with_it_open():
    model = tiny("gated", silent_unet=False)
    c = model.latent_channels
    assert model.unet.unet.conv_out.out_channels == c + 1  # the gate is one more U-Net output
    g = torch.Generator().manual_seed(5)
    noisy = torch.randn(2, c, FRAMES, 16, 16, generator=g)
    first = torch.randn(2, c, 16, 16, generator=g)
    x = assemble_input(noisy, torch.zeros(2, 1, 16, 16), first, first_frame_frames="all")
    text = model.encode_text(["", ""])
    t = torch.tensor([999, 400])
    sigma = noise_sigma(make_scheduler().alphas_cumprod, t)
    out = {}
    with torch.no_grad():
        for logit in (-30.0, 30.0, 0.0):
            set_gate(model, logit)
            out[logit] = model.unet(x, t, text, text, magnitude=torch.tensor([2.0, 2.0]), noise_sigma=sigma)
    assert out[0.0].shape == (2, c, FRAMES, 16, 16)
    skip = sigma.view(2, 1, 1, 1, 1) * first[:, :, None]
    plain = out[30.0] + skip  # gate open: "all", every frame carries the skip
    torch.testing.assert_close(out[-30.0][:, :, 1:], plain[:, :, 1:])  # gate shut: later frames plain ...
    torch.testing.assert_close(out[-30.0][:, :, :1], out[30.0][:, :, :1])  # ... frame 0 always skipped
    torch.testing.assert_close(out[0.0][:, :, 1:], plain[:, :, 1:] - 0.5 * skip)


def test_gated_skip_with_the_gate_open_samples_the_still_input_and_shut_draws_grey():
    image = textured_image()
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[8:16, 8:16] = True
    videos = {}
    for logit in (30.0, -30.0):
        model = tiny("gated")
        set_gate(model, logit)
        pipe = FYCPipeline(model, scheduler=make_scheduler(clean_last_step=True), impose_first_frame=False,
                           default_num_frames=FRAMES)
        pipe.layout.first_frame_frames = "all"  # as the model was built (the pipeline's default is "first")
        videos[logit] = pipe(image, mask, "sway", steps=1, guidance=1.0, seed=0, progress=False).astype(float)
    assert np.abs(videos[30.0] - image[None]).max() <= 1
    assert np.abs(videos[-30.0][0] - image).max() <= 1
    assert np.abs(videos[-30.0][1:] - image[None]).mean() > 40


def test_gated_unet_round_trips_through_save_pretrained(tmp_path):
    from diffusers import UNetMotionModel

    from fyc_train.models.unet import FYCUNet

    model = tiny("gated", silent_unet=False)
    model.unet.unet.save_pretrained(tmp_path)
    reloaded = FYCUNet(UNetMotionModel.from_pretrained(tmp_path), model.unet.config)
    assert reloaded.unet.conv_out.out_channels == model.latent_channels + 1
    torch.testing.assert_close(reloaded.unet.conv_out.weight, model.unet.unet.conv_out.weight)


def test_gated_skip_trains_its_gate_when_only_motion_modules_train():
    from fyc_train.models.fyc_model import FYCModel

    model = tiny("gated")
    motion_only = FYCModel(model.unet, model.autoencoder, model.text_encoder, trainable="motion")
    names = {n for n, _ in motion_only.named_trainable_parameters()}
    assert {"unet.unet.conv_out.weight", "unet.unet.conv_out.bias"} <= names
    assert not any(".resnets." in n and "motion" not in n for n in names)  # spatial layers stay frozen


@pytest.mark.parametrize("init", [0.02, 0.5])
def test_copy_gate_starts_at_its_configured_value(init):
    model = build_tiny(image_size=SIZE, autoencoder={"factor": 2}, unet={"block_out_channels": [16, 32]},
                       fyc={"first_frame_skip": "gated", "copy_gate_init": init})
    bias = model.unet.unet.conv_out.bias[model.latent_channels:]
    assert torch.sigmoid(bias).item() == pytest.approx(init)
    assert model.unet.unet.conv_out.weight[model.latent_channels:].abs().max() == 0
    with pytest.raises(ValueError, match="copy_gate_init"):
        FYCUNetConfig(first_frame_skip="gated", copy_gate_init=1.0)
