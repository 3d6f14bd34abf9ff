"""Sampler settings travel with a checkpoint: per key, a command-line value wins over the
checkpoint's (its experiment's `sampling:` block), which wins over the command's fallback;
fyc-sample samples with them and logs where each value came from."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from fyc_train.config_validation import ConfigError, validate_config
from fyc_train.sampling.settings import SamplerSettings, resolve_sampler_settings

RECIPE = {"steps": 1, "guidance": 1.25, "prompt_in_spatial": False, "impose_first_frame": False}


def compose_config(name: str, overrides: list[str]):
    """Compose a command's config from the folder that command itself reads."""
    import importlib

    config_dir = importlib.import_module(f"fyc_train.cli.{name}").CONFIG_DIR
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        return compose(name, overrides=overrides)


def test_precedence_command_line_then_checkpoint_then_fallback():
    settings, sources = resolve_sampler_settings(
        {"steps": 4, "guidance": None}, {"steps": 1, "guidance": 1.25, "prompt_in_spatial": False},
        SamplerSettings(guidance_rescale=0.3))
    assert (settings.steps, sources["steps"]) == (4, "command line")
    assert (settings.guidance, sources["guidance"]) == (1.25, "checkpoint")  # null on the command line
    assert (settings.prompt_in_spatial, sources["prompt_in_spatial"]) == (False, "checkpoint")
    assert (settings.guidance_rescale, sources["guidance_rescale"]) == (0.3, "fallback")
    # a checkpoint without stored settings: the fallback; an invalid stored value is named with its source
    assert resolve_sampler_settings({}, None)[0] == SamplerSettings()
    with pytest.raises(ValueError, match=r"guidance=0.5: must be >= 1.0.*\(from the checkpoint\)"):
        resolve_sampler_settings({}, {"guidance": 0.5})


def test_experiments_carry_their_sampler_settings_and_invalid_ones_are_refused():
    default = compose_config("train", ["data.shards=x"])
    assert OmegaConf.to_container(default.sampling) == SamplerSettings().to_dict()  # one set of defaults
    for experiment in ("moving_shapes", "moving_shapes_blend"):
        sampling = compose_config("train", [f"experiment={experiment}"]).sampling
        assert {k: sampling[k] for k in RECIPE} == RECIPE, experiment
    cfg = compose_config("train", ["data.shards=x", "sampling.steps=0", "sampling.guidance=0.5"])
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, check_data=False)
    assert "sampling.steps=0" in str(err.value) and "sampling.guidance=0.5" in str(err.value)


@pytest.fixture()
def recipe_checkpoint(tmp_path):
    """A checkpoint as fyc-train writes it, of a model trained with experiment=moving_shapes
    (its `sampling:` block differs from fyc-sample's defaults in every key it sets)."""
    from fyc_train.lit_module import FYCLitModule

    plain = OmegaConf.to_container(compose_config("train", ["experiment=moving_shapes", "data.shards=x"]),
                                   resolve=True)
    lit = FYCLitModule(model=instantiate(plain["model"]), model_config=plain["model"], sampling=plain["sampling"])
    ckpt = {"state_dict": lit.state_dict()}
    lit.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "recipe.ckpt")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "in.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 20:40] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path


def test_fyc_sample_uses_the_checkpoints_settings_and_an_override_wins(recipe_checkpoint, monkeypatch, caplog):
    import fyc_train.cli.sample as cli

    calls = []

    class RecordingPipeline(cli.FYCPipeline):
        def __call__(self, *args, **kwargs):
            calls.append({"prompt_in_spatial": self.prompt_in_spatial, "impose_first_frame": self.impose_first_frame,
                          "clean_last_step": bool(self.scheduler.config.set_alpha_to_one), **kwargs})
            return super().__call__(*args, **kwargs)

    monkeypatch.setattr(cli, "FYCPipeline", RecordingPipeline)
    base = [f"checkpoint={recipe_checkpoint / 'recipe.ckpt'}", f"image={recipe_checkpoint / 'in.png'}",
            f"mask={recipe_checkpoint / 'mask.png'}", "prompt=move left", "contact_sheet=false", "device=cpu"]
    with caplog.at_level(logging.INFO, logger="fyc-sample"):
        cli.run(compose_config("sample", [*base, f"output={recipe_checkpoint / 'a.mp4'}"]))
        cli.run(compose_config("sample", [*base, f"output={recipe_checkpoint / 'b.mp4'}", "steps=2",
                                          "prompt_in_spatial=true"]))
    stored, overridden = calls
    assert {k: stored[k] for k in RECIPE} == RECIPE
    assert stored["guidance_rescale"] == 0.0 and stored["clean_last_step"] is True
    assert {k: overridden[k] for k in RECIPE} == {**RECIPE, "steps": 2, "prompt_in_spatial": True}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sampler settings:")]
    assert "steps=1 (checkpoint)" in lines[0] and "guidance=1.25 (checkpoint)" in lines[0]
    assert "steps=2 (command line)" in lines[1] and "prompt_in_spatial=True (command line)" in lines[1]
    assert "guidance=1.25 (checkpoint)" in lines[1]
