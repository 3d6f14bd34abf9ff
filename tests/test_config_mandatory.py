"""Every mandatory key (`???`) fails before any heavy work, naming the key, in every app.

OmegaConf's merge never lets `???` replace a value, so `module.init_from: ???` in a stage-2
experiment composed to conf/train/train.yaml's null and stage 2 trained from the raw base model; the
experiments are checked here one by one, in process (compose + validate, no data, no model), and
each app once through its real command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from fyc_train.cli.train import CONFIG_DIR
from fyc_train.config_validation import ConfigError, validate_config
from fyc_train.utils.mandatory_keys import declared_mandatory

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "train" / "experiment").glob("*.yaml"))
STAGE_TWO = {"stage2_256", "stage2_512", "moving_shapes_blend"}  # fine-tune a stage-1 checkpoint


def composed(overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_each_mandatory_key_of_each_experiment_is_named_when_left_out(experiment, tmp_path):
    cfg = composed([f"experiment={experiment}"])
    mandatory = sorted(declared_mandatory(CONFIG_DIR, "train", dict(cfg.hydra.runtime.choices)))
    assert "data.shards" in mandatory
    assert ("module.init_from" in mandatory) == (experiment in STAGE_TWO), mandatory
    values = {key: str(tmp_path / key) for key in mandatory}
    # all given: the config validates (data not read: no shards exist here)
    validate_config(composed([f"experiment={experiment}", *(f"{k}={v}" for k, v in values.items())]),
                    check_data=False)
    for left_out in mandatory:
        given = [f"{k}={v}" for k, v in values.items() if k != left_out]
        with pytest.raises(ConfigError, match=f"{left_out}: mandatory"):
            validate_config(composed([f"experiment={experiment}", *given]), check_data=False)
    if "module.init_from" in mandatory:  # an explicit null is not a stage-1 checkpoint either
        given = [f"{k}={v}" for k, v in values.items() if k != "module.init_from"]
        with pytest.raises(ConfigError, match="module.init_from: mandatory"):
            validate_config(composed([f"experiment={experiment}", *given, "module.init_from=null"]),
                            check_data=False)


def test_every_app_names_its_missing_mandatory_keys_and_exits_2(tmp_path):
    """The real commands, run side by side: exit code 2 and the key named, no traceback."""
    bin_dir = Path(sys.executable).parent
    runs = {
        "train": ([bin_dir / "fyc-train", "experiment=stage2_256", "data.shards=x", "model.pretrained_path=p",
                   "model.motion_adapter_path=m", "validate_only_config=true"], ["module.init_from"]),
        "sample": ([bin_dir / "fyc-sample"], ["checkpoint", "image", "prompt"]),
        "eval_shapes": ([bin_dir / "fyc-eval-shapes"], ["checkpoint"]),
        "preprocess": ([bin_dir / "fyc-preprocess", "input.manifest=m.csv"], ["output.dir"]),
    }
    env = {**os.environ, "FYC_OUTPUT_DIR": str(tmp_path), "WANDB_MODE": "disabled"}
    env.pop("FYC_RAISE_CONFIG_ERRORS", None)
    procs = {name: subprocess.Popen([str(a) for a in args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True) for name, (args, _) in runs.items()}
    for name, proc in procs.items():
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 2, f"{name}: exit {proc.returncode}\n{out[-3000:]}"
        assert "Traceback" not in out, f"{name}:\n{out[-3000:]}"
        for key in runs[name][1]:
            assert f"{key}: mandatory" in out or f"{key} (pass {key}=...)" in out, f"{name}: {key} not named\n{out}"
