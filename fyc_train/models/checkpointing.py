"""Checks for local model folders: fail early with a message naming the folder and its files."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class ModelFolderError(FileNotFoundError):
    """A local model folder is missing or lacks the files a loader needs."""


def require_files(folder: str | Path, files: Iterable[str | tuple[str, ...]], what: str) -> Path:
    """Raise :class:`ModelFolderError` unless ``folder`` exists and holds every file.

    Each entry of ``files`` is a file name, or a tuple of alternatives of which one must exist
    (e.g. ``("model.safetensors", "pytorch_model.bin")``).
    """
    folder = Path(folder)
    wanted = [f if isinstance(f, tuple) else (f,) for f in files]
    listing = " and ".join(" or ".join(alts) for alts in wanted)
    if not folder.is_dir():
        raise ModelFolderError(
            f"{what}: folder {folder} does not exist; it must be a diffusers-format folder "
            f"containing {listing}"
        )
    missing = [" or ".join(alts) for alts in wanted if not any((folder / a).is_file() for a in alts)]
    if missing:
        raise ModelFolderError(
            f"{what}: folder {folder} is incomplete: missing {', '.join(missing)} "
            f"(it must contain {listing}; save one with save_pretrained or download a diffusers-format copy)"
        )
    return folder
