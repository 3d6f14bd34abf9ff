"""`pip install .` (not editable) gives working commands: the wheel carries the Hydra configs,
every app composes its config from a folder outside the repository, and each app's `--help`
lists its own config groups only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# console script -> (module, config groups its --help must list, groups it must not list)
APPS = {
    "fyc-train": ("fyc_train.cli.train", {"experiment", "model", "trainer", "logger", "hparams_search"}, set()),
    "fyc-preprocess": ("preprocessing.cli", set(), {"experiment", "model", "trainer"}),
    "fyc-curate": ("preprocessing.curation.cli", set(), {"experiment", "model", "trainer"}),
    "fyc-sample": ("fyc_train.cli.sample", set(), {"experiment", "trainer", "data"}),
    "fyc-eval-shapes": ("fyc_train.cli.eval_shapes", set(), {"experiment", "trainer", "data"}),
}


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(work / "dist"), str(REPO)], check=True, cwd=work, timeout=600)
    wheels = list((work / "dist").glob("fyc-*.whl"))
    assert len(wheels) == 1, wheels
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheels[0])], check=True, cwd=work, timeout=600)
    return target


def _run_app(site: Path, module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    # The wheel's copy comes first on sys.path, ahead of the editable install of this checkout.
    code = (f"import sys, {module} as app; "
            f"assert app.__file__.startswith({str(site)!r}), app.__file__; "
            f"sys.argv = ['app', *sys.argv[1:]]; app.main()")
    env = {**os.environ, "PYTHONPATH": str(site), "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True,
                           text=True, timeout=300)


@pytest.mark.slow
def test_wheel_ships_the_configs_and_every_app_composes_outside_the_repository(installed_wheel, tmp_path):
    assert (installed_wheel / "fyc_conf" / "train" / "train.yaml").is_file()
    assert not (installed_wheel / "conf").exists()
    for name, (module, own_groups, foreign_groups) in APPS.items():
        job = _run_app(installed_wheel, module, "--cfg", "job", cwd=tmp_path)
        assert job.returncode == 0, f"{name} --cfg job failed:\n{job.stderr[-3000:]}"
        assert job.stdout.strip(), f"{name} printed no config"

        help_text = _run_app(installed_wheel, module, "--help", cwd=tmp_path)
        assert help_text.returncode == 0, f"{name} --help failed:\n{help_text.stderr[-3000:]}"
        groups = _config_groups(help_text.stdout)
        assert own_groups <= groups, f"{name} --help lacks {own_groups - groups}: {sorted(groups)}"
        assert not (foreign_groups & groups), f"{name} --help lists another app's groups: {sorted(groups)}"

    train = _run_app(installed_wheel, "fyc_train.cli.train", "experiment=stage1_256", "--cfg", "job", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "gradient_checkpointing" in train.stdout


def _config_groups(help_text: str) -> set[str]:
    """Group names from Hydra's '== Configuration groups ==' section (`name: option, ...`)."""
    lines = help_text.split("== Configuration groups ==", 1)[-1].split("== Config ==", 1)[0].splitlines()
    return {line.split(":", 1)[0].strip() for line in lines
            if ":" in line and not line.startswith(("Compose", " ")) and "/" not in line.split(":", 1)[0]}
