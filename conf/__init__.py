"""The Hydra configs of every fyc command, one folder per app (`train/`, `preprocess/`,
`curate/`, `sample/`, `eval_shapes/`), so each app's `--help` lists its own config groups only.

The repository's `conf/` folder is installed as the package `fyc_conf` (pyproject.toml), so a
plain `pip install .` finds the configs from any working directory, as an editable install does.
"""

from __future__ import annotations

from importlib.resources import files

APPS = ("train", "preprocess", "curate", "sample", "eval_shapes")


def config_dir(app: str) -> str:
    """Absolute path of an app's config folder (Hydra's `config_path` / `initialize_config_dir`)."""
    if app not in APPS:
        raise ValueError(f"unknown app {app!r}: one of {', '.join(APPS)}")
    return str(files(__name__) / app)
