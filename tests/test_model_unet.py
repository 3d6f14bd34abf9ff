"""FYCUNet: zero-init equivalence, MA, magnitude embedding, trainable sets, checkpointing."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

from fyc_train.models import FYCUNet, FYCUNetConfig, assemble_input, build_tiny
from fyc_train.models.build import tiny_adapter_config, tiny_unet2d_config
from fyc_train.models.motion_augment import MotionAugmentAttention, motion_augment_modules

torch.set_num_threads(1)
C, D, B, F, H = 4, 32, 2, 4, 8  # latent channels, text width, batch, frames, latent size


def base_motion_unet(seed: int = 0) -> UNetMotionModel:
    """A 4-channel UNetMotionModel through the SD path (UNet2D + MotionAdapter -> from_unet2d)."""
    torch.manual_seed(seed)
    cfg = tiny_unet2d_config(C, D, sample_size=H)
    unet2d = UNet2DConditionModel(**cfg)
    with torch.no_grad():  # a non-trivial conv_in bias, so keeping it is checked
        unet2d.conv_in.bias.normal_()
    return UNetMotionModel.from_unet2d(unet2d, MotionAdapter(**tiny_adapter_config(cfg)))


def fyc(unet: UNetMotionModel, **options) -> FYCUNet:
    opts = dict(latent_channels=C, motion_context_dim=D, fps_embedding=True)
    opts.update(options)
    return FYCUNet(copy.deepcopy(unet), FYCUNetConfig(**opts)).eval()


def inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    noisy = torch.randn(B, C, F, H, H, generator=g)
    mask = (torch.rand(B, 1, H, H, generator=g) > 0.5).float()
    first = torch.randn(B, C, H, H, generator=g)
    return dict(
        noisy=noisy, x=assemble_input(noisy, mask, first), t=torch.tensor([10, 700]),
        text=torch.randn(B, 7, D, generator=g), motion=torch.randn(B, 5, D, generator=g),
        magnitude=torch.tensor([2.0, 9.0]), fps=torch.tensor([4.0, 8.0]),
    )


def randomize_(modules) -> None:
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.normal_(0, 0.2)


@pytest.fixture(scope="module")
def base():
    return base_motion_unet()


def test_widened_conv_in_keeps_weights_and_bias(base):
    net = fyc(base)
    w, old = net.unet.conv_in, base.conv_in
    assert w.in_channels == 2 * C + 1 and net.unet.config.in_channels == 2 * C + 1
    assert torch.equal(w.weight[:, :C], old.weight) and (w.weight[:, C:] == 0).all()
    assert torch.equal(w.bias, old.bias) and old.bias.abs().sum() > 0


def test_fyc_unet_at_init_equals_base_unet(base):
    """MA + magnitude + fps at init, mask/first-frame channels arbitrary: the base U-Net's output."""
    inp = inputs()
    with torch.no_grad():
        ref = base(inp["noisy"], inp["t"], encoder_hidden_states=inp["text"].repeat_interleave(F, 0)).sample
        out = fyc(base)(inp["x"], inp["t"], inp["text"], inp["motion"], inp["magnitude"], inp["fps"])
    assert out.shape == (B, C, F, H, H)
    # only conv_in's reduction now runs over 2C+1 channels (zeros added): float-order noise
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_ma_and_magnitude_are_bit_exact_noops_at_init(base):
    inp = inputs()
    plain = fyc(base, motion_augment=False, magnitude_embedding=False, fps_embedding=False)
    full = fyc(base)
    with torch.no_grad():
        a = plain(inp["x"], inp["t"], inp["text"])
        b = full(inp["x"], inp["t"], inp["text"], inp["motion"], inp["magnitude"], inp["fps"])
    assert torch.equal(a, b)


def test_every_motion_block_has_ma_and_ma_follows_the_motion_prompt(base):
    net = fyc(base)
    blocks = [m for n, m in net.unet.named_modules() if n.endswith(".transformer_blocks.0") and ".motion_modules." in n]
    assert len(motion_augment_modules(net.unet)) == len(blocks) > 0
    randomize_(motion_augment_modules(net.unet))
    inp = inputs()
    with torch.no_grad():
        no_ma = net(inp["x"], inp["t"], inp["text"], None)
        a = net(inp["x"], inp["t"], inp["text"], inp["motion"])
        b = net(inp["x"], inp["t"], inp["text"], inp["motion"].flip(0))
    assert not torch.allclose(no_ma, a, atol=1e-4)
    assert not torch.allclose(a[0], b[0], atol=1e-4)  # sample 0 follows its own prompt
    assert net.context.motion_states is None, "context must be cleared after forward"


def test_ma_attention_equals_per_sequence_reference():
    """The (B, H*W*F) view attends exactly like repeating the prompt for every (b, y, x) sequence."""
    torch.manual_seed(0)
    ma = MotionAugmentAttention(dim=16, context_dim=D, heads=2)
    randomize_([ma])
    hw, f = 6, 4
    hidden = torch.randn(B * hw, f, 16)
    motion = torch.randn(B, 5, D)
    out = ma(hidden, motion)
    rep = motion.repeat_interleave(hw, dim=0)  # diffusers' layout: batch-major (b, y, x)
    ref = hidden + ma.attn(ma.norm(hidden), encoder_hidden_states=rep)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_magnitude_changes_output_once_last_layer_is_nonzero(base):
    net = fyc(base, motion_augment=False)
    inp = inputs()
    with torch.no_grad():
        before = [net(inp["x"], inp["t"], inp["text"], magnitude=torch.tensor([m, m])) for m in (2.0, 12.0)]
        assert torch.equal(before[0], before[1])
        randomize_([net.magnitude_embedding.mlp.linear_2])
        after = [net(inp["x"], inp["t"], inp["text"], magnitude=torch.tensor([m, m])) for m in (2.0, 12.0)]
    assert not torch.allclose(after[0], after[1], atol=1e-4)
    assert not torch.allclose(after[0], before[0], atol=1e-4)


def test_gradient_checkpointing_gives_same_gradients(base):
    net = fyc(base).train()
    randomize_(motion_augment_modules(net.unet) + [net.magnitude_embedding.mlp.linear_2])
    inp = inputs()

    def grads(model):
        model.zero_grad()
        out = model(inp["x"], inp["t"], inp["text"], inp["motion"], inp["magnitude"], inp["fps"])
        out.square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref = grads(net)
    net.enable_gradient_checkpointing()
    ckpt = [n for n, m in net.unet.named_modules() if getattr(m, "gradient_checkpointing", False)]
    assert any(".motion_modules." in n for n in ckpt), "motion blocks must be checkpointed too"
    got = grads(net)
    assert ref.keys() == got.keys() and any("motion_augment" in n for n in got)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-6, msg=n)


def test_trainable_sets():
    model = build_tiny(image_size=16, trainable="motion", text={"hidden_size": 32})
    names = {n for n, _ in model.named_trainable_parameters()}
    assert all(p.requires_grad == (n in names) for n, p in model.named_parameters())
    assert "unet.unet.conv_in.weight" in names and "unet.unet.conv_in.bias" in names
    assert any(".motion_modules." in n and "motion_augment" in n for n in names)
    assert any(n.startswith("unet.magnitude_embedding.") for n in names)
    spatial = [n for n, _ in model.named_parameters() if ".attentions." in n or ".resnets." in n
               or "time_embedding" in n or "conv_out" in n]
    assert spatial and not names & set(spatial)
    assert not any(n.startswith("text_encoder.") for n in names)
    model.train()
    assert not model.text_encoder.training and model.unet.training

    whole = build_tiny(image_size=16, trainable="unet", text={"hidden_size": 32})
    assert {n for n, _ in whole.named_trainable_parameters()} == {n for n, _ in whole.named_parameters() if n.startswith("unet.")}
    with pytest.raises(ValueError, match="trainable"):
        build_tiny(image_size=16, trainable="spatial")


def test_tiny_model_end_to_end_shapes_and_bf16_autocast():
    model = build_tiny(image_size=16, text={"hidden_size": 32})
    video = torch.rand(1, F, 3, 16, 16) * 2 - 1
    z = model.encode_video(video)
    assert z.shape == (1, model.latent_channels, F, 8, 8)
    torch.testing.assert_close(model.decode_latents(z), video)
    x = assemble_input(torch.randn_like(z), torch.ones(1, 1, 8, 8), z[:, :, 0])
    ehs, mhs = model.text_conditioning(["a red disc on grass"], ["move left"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.unet(x, torch.tensor([500]), ehs, mhs, magnitude=torch.tensor([4.0]))
    assert out.shape == z.shape and torch.isfinite(out).all()
    spatial, motion = model.text_conditioning(["caption"], ["move left"], inference=True)
    assert torch.equal(spatial, motion)  # paper: short prompt in both at inference
