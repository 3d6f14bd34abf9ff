"""The "blend" copy gate (``fyc.first_frame_skip=blend``): frames 1.. are the convex mix
``g * v_still + (1 - g) * unet`` of the still video and the U-Net's own drawing. What a user
relies on: an open gate reproduces the input exactly, a shut gate is the "first" skip, the loss
opens the gate on a still background even when the U-Net already draws it (where the additive
"gated" skip shuts), and a checkpoint trained without a gate warm-starts a gated model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_first_frame_skip import FRAMES, SIZE, set_gate, still_batch, textured_image, tiny

from fyc_train.lit_module import FYCLitModule, with_copy_gate_rows
from fyc_train.models.build import build_tiny
from fyc_train.models.first_frame import assemble_input, noise_sigma, split_input
from fyc_train.sampling.pipeline import FYCPipeline, make_scheduler


def unet_outputs(model, logits: tuple[float | None, ...], t=(999, 400, 20)):
    """The U-Net's v for one random input at timesteps ``t``, per forced gate logit (None: the
    model's own gate); and its inputs."""
    c, b = model.latent_channels, len(t)
    g = torch.Generator().manual_seed(5)
    noisy = torch.randn(b, c, FRAMES, 16, 16, generator=g)
    first = torch.randn(b, c, 16, 16, generator=g)
    x = assemble_input(noisy, torch.zeros(b, 1, 16, 16), first, first_frame_frames="all")
    text = model.encode_text([""] * b)
    t = torch.tensor(t)
    sigma = noise_sigma(make_scheduler().alphas_cumprod, t)
    out = {}
    with torch.no_grad():
        for logit in logits:
            if logit is not None:
                set_gate(model, logit)
            out[logit] = model.unet(x, t, text, text, magnitude=torch.full((b,), 2.0), noise_sigma=sigma)
    return out, noisy, first, sigma.view(b, 1, 1, 1, 1)


def test_open_gate_predicts_exactly_the_still_video_at_every_noise_level():
    model = tiny("blend", silent_unet=False)
    out, noisy, first, sigma = unet_outputs(model, (30.0,))
    alpha = (1 - sigma.square()).sqrt()
    x0 = alpha * noisy - sigma * out[30.0]  # DDIM's clean-video estimate from a v-prediction
    torch.testing.assert_close(x0[:, :, 1:], first[:, :, None].expand(-1, -1, FRAMES - 1, -1, -1),
                               atol=1e-5, rtol=0)


def test_shut_gate_is_the_first_frame_skip_and_half_open_is_the_mean():
    model = tiny("blend", silent_unet=False)
    out, _, first, sigma = unet_outputs(model, (-30.0, 30.0, 0.0))
    model.unet.config.first_frame_skip = "none"  # the diffusers U-Net's own output, gate row included
    plain = unet_outputs(model, (-30.0,))[0][-30.0][:, : model.latent_channels]
    torch.testing.assert_close(out[-30.0][:, :, 1:], plain[:, :, 1:])  # shut: later frames drawn freely ...
    torch.testing.assert_close(out[-30.0][:, :, :1], plain[:, :, :1] - sigma * first[:, :, None])  # ... as "first"
    torch.testing.assert_close(out[0.0][:, :, 1:], 0.5 * (out[-30.0][:, :, 1:] + out[30.0][:, :, 1:]))
    torch.testing.assert_close(out[0.0][:, :, :1], out[30.0][:, :, :1])  # frame 0 is never gated


@pytest.mark.parametrize("skip", ["blend", "blend_all"])
def test_open_gate_samples_the_input_on_every_gated_frame(skip):
    image = textured_image()
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[8:16, 8:16] = True
    model = tiny(skip, silent_unet=False)
    set_gate(model, 30.0)
    for steps in (1, 4):
        pipe = FYCPipeline(model, scheduler=make_scheduler(clean_last_step=True), impose_first_frame=False,
                           default_num_frames=FRAMES)
        pipe.layout.first_frame_frames = "all"  # as the model was built (the pipeline's default is "first")
        video = pipe(image, mask, "sway", steps=steps, guidance=1.0, seed=0, progress=False)
        error = np.abs(video.astype(float) - image[None])
        assert error[1:].max() <= 1, steps
        # "blend": frame 0 is z0 plus the U-Net's residual (the flicker at frame 1 "blend_all" removes)
        assert bool(error[0].max() <= 1) is (skip == "blend_all"), steps


def test_blend_all_with_the_gate_shut_is_blend():
    outputs = {}
    for skip in ("blend", "blend_all"):
        torch.manual_seed(0)
        outputs[skip] = unet_outputs(tiny(skip, silent_unet=False), (-30.0,))[0][-30.0]
    torch.testing.assert_close(outputs["blend_all"], outputs["blend"])


def test_per_channel_gate_copies_each_latent_channel_on_its_own():
    model = build_tiny(image_size=SIZE, autoencoder={"factor": 2}, unet={"block_out_channels": [16, 32]},
                       fyc={"first_frame_skip": "blend_all", "first_frame_frames": "all",
                            "copy_gate_per_channel": True}).eval()
    c = model.latent_channels
    assert model.unet.unet.conv_out.out_channels == 2 * c  # pixel-unshuffle: one gate per pixel and colour
    out, noisy, first, sigma = unet_outputs(model, (-30.0,))
    with torch.no_grad():
        model.unet.unet.conv_out.bias[c:].copy_(torch.where(torch.arange(c) % 2 == 0, 30.0, -30.0))
    mixed = unet_outputs(model, (None,))[0][None]
    x0 = (1 - sigma.square()).sqrt() * noisy - sigma * mixed
    still = first[:, :, None].expand_as(x0)
    torch.testing.assert_close(x0[:, ::2], still[:, ::2], atol=1e-5, rtol=0)  # open channels copy z0 ...
    torch.testing.assert_close(mixed[:, 1::2], out[-30.0][:, 1::2])  # ... shut ones are the U-Net's


@pytest.mark.parametrize("t", [999, 500, 50])
def test_loss_opens_the_blend_gate_on_a_still_video_that_the_unet_draws_almost_right(t):
    """The warm-start case: a U-Net that already redraws the background (its output is the
    still video's v plus a small error). Blend's loss gradient opens the gate; the additive
    "gated" skip's shuts it (opening it adds a second copy of the background)."""
    grads = {}
    for skip in ("blend", "gated"):
        model = tiny(skip)
        set_gate(model, -2.0)  # gate ~0.12: the model starts close to "first"
        module = FYCLitModule(model)
        module.sample_timesteps = lambda n, gen: torch.full((n,), t, dtype=torch.long)
        model.unet.unet.register_forward_hook(_draws_the_still_video_with_an_error(module))
        module.compute_loss(still_batch(), torch.Generator().manual_seed(0), train=False).backward()
        grads[skip] = model.unet.unet.conv_out.bias.grad[model.latent_channels].item()
    assert grads["blend"] < 0 < grads["gated"]  # gradient descent: blend's gate logit rises, gated's falls


def _draws_the_still_video_with_an_error(module: FYCLitModule):
    """A forward hook on the diffusers U-Net: its latent output becomes the v of the still
    video (its input's z0) plus a fixed 10% error, its gate row is kept."""
    c = module.model.latent_channels

    def hook(_, args, output):
        sample, t = args[0], args[1]
        noisy, _, first = split_input(sample, c)
        sigma = noise_sigma(module.alphas_cumprod, t).view(-1, 1, 1, 1, 1)
        v_still = ((1 - sigma.square()).sqrt() * noisy - first) / sigma
        error = 0.1 * torch.randn(v_still.shape, generator=torch.Generator().manual_seed(1))
        return (torch.cat([v_still + error, output[0][:, c:]], dim=1),)

    return hook


def test_a_checkpoint_without_a_gate_warm_starts_a_gated_model(tmp_path):
    source = tiny("first", silent_unet=False)
    path = tmp_path / "first.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}, path)
    target = FYCLitModule(tiny("blend", silent_unet=False), init_from=str(path))
    c = source.latent_channels
    conv, old = target.model.unet.unet.conv_out, source.unet.unet.conv_out
    torch.testing.assert_close(conv.weight[:c], old.weight)
    torch.testing.assert_close(conv.bias[:c], old.bias)
    assert conv.weight.shape[0] == c + 1  # the gate row kept what the gated model was built with:
    assert conv.weight[c:].abs().max() == 0 and conv.bias[c:].abs().max() == 0  # zero weights, logit(0.5)


@pytest.mark.parametrize("gate_rows", [1, 4])
def test_copy_gate_rows_leaves_every_other_shape_mismatch_to_load_state_dict(gate_rows):
    own = {"unet.conv_out.weight": torch.zeros(4 + gate_rows, 8, 3, 3), "unet.conv_in.weight": torch.zeros(8, 9, 3, 3)}
    state = {"unet.conv_out.weight": torch.ones(4, 8, 3, 3), "unet.conv_in.weight": torch.ones(8, 4, 3, 3)}
    padded = with_copy_gate_rows(state, own)
    gate = padded["unet.conv_out.weight"]
    assert gate.shape == (4 + gate_rows, 8, 3, 3) and gate[4:].abs().max() == 0 and gate[:4].min() == 1
    assert padded["unet.conv_in.weight"].shape == (8, 4, 3, 3)  # not a gate: load_state_dict reports it
