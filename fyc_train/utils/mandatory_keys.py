"""Mandatory keys (`???`) that composition silently filled.

OmegaConf's merge never lets `???` replace a value: when conf/train/train.yaml says
`module.init_from: null` and an experiment merged after it says `init_from: ???`, the composed
config holds null and nothing reports the key as missing, so stage 2 would train from the raw
base model. Hydra keeps no record of which file declared what, so this module replays the
composition order over the YAML files themselves (the primary config's defaults list, each
chosen group option and the options it extends) and returns every key that the last file to
mention it declared `???`. Such a key is satisfied only by a command-line override with a
non-null value; the caller turns the rest into a ConfigError naming the key and the file.
Keys still `???` after composition are reported by OmegaConf itself (MissingMandatoryValue).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

MISSING = "???"


def _package(path: Path, group: str) -> str:
    """Dotted prefix where a group option's keys land (`# @package _global_` = the root)."""
    with path.open() as f:
        for line in f:
            if not line.startswith("#"):
                break
            if line.startswith("# @package"):
                package = line.split("@package", 1)[1].strip()
                return "" if package == "_global_" else package.replace("_group_", group.replace("/", "."))
    return group.replace("/", ".")


def _leaves(node: Any, prefix: str) -> Iterable[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "defaults" and not prefix:
                continue
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def _files_in_order(conf_dir: Path, group: str | None, name: str, choices: Mapping[str, Any],
                    seen: set[Path]) -> list[tuple[Path, str]]:
    """(file, package) in the order Hydra merges them: a file's defaults around its `_self_`
    (last when not listed); group entries resolve to the final choice (overrides included)."""
    path = conf_dir / (f"{group}/{name}.yaml" if group else f"{name}.yaml")
    if not path.is_file() or path in seen:  # structured configs (ConfigStore) hold no `???` of ours
        return []
    seen.add(path)
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    own = [(path, _package(path, group) if group else "")]
    before, after, self_seen = [], [], False
    for entry in (raw or {}).get("defaults", []) if isinstance(raw, Mapping) else []:
        if entry == "_self_":
            self_seen = True
            continue
        found: list[tuple[Path, str]] = []
        if isinstance(entry, str):  # another option of the same group (e.g. stage2_256 -> stage1_256)
            found = _files_in_order(conf_dir, group, entry, choices, seen) if group else []
        elif isinstance(entry, Mapping):
            for key in entry:
                sub = str(key).removeprefix("optional ").strip()
                if sub.startswith("override "):  # the choice it makes is in `choices` already
                    continue
                sub = sub.lstrip("/")
                option = choices.get(sub)
                if sub.startswith("hydra") or option is None:
                    continue
                found += _files_in_order(conf_dir, sub, str(option), choices, seen)
        (after if self_seen else before).extend(found)
    return before + own + after if self_seen else before + own


def declared_mandatory(conf_dir: str | Path, config_name: str, choices: Mapping[str, Any]) -> dict[str, Path]:
    """Dotted key -> the file whose `???` is the key's last word before the command line."""
    mandatory: dict[str, Path] = {}
    for path, package in _files_in_order(Path(conf_dir), None, config_name, choices, set()):
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        for key, value in _leaves(raw, package):
            if value == MISSING:
                mandatory[key] = path
            else:  # a later file gave it a value (or a subtree): no longer mandatory
                for declared in [k for k in mandatory if k == key or k.startswith(key + ".")]:
                    del mandatory[declared]
    return mandatory


def unfilled_mandatory_keys(cfg: Any, conf_dir: str | Path, config_name: str, choices: Mapping[str, Any],
                            overrides: Iterable[str]) -> list[str]:
    """Messages for mandatory keys no command-line override filled (the composed value, e.g.
    null from conf/train/train.yaml, came from a file merged before the `???`)."""
    overridden = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    errors = []
    for key, path in sorted(declared_mandatory(conf_dir, config_name, choices).items()):
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
        if isinstance(parent, DictConfig) and leaf in parent.keys() and OmegaConf.is_missing(parent, leaf):
            continue  # still `???`: OmegaConf reports it
        value = OmegaConf.select(cfg, key, default=None)
        given = any(key == o or key.startswith(o + ".") for o in overridden)
        if not given or value is None:
            errors.append(f"{key}: mandatory (`???` in {path.relative_to(Path(conf_dir).parent)}) but not set "
                          f"(composed to {value!r}); pass {key}=...")
    return errors
