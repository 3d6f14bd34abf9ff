"""The repository stands alone and describes the software as it is.

Every file a user clones (code, configs, docs, tests, committed JSON, file and folder names) is
scanned for words that belong to how the project was developed rather than to what it does,
and for paths that point outside the repository. The few legitimate uses are allow-listed by
the exact text around them, so a new occurrence anywhere fails with its file and line.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The words are spelt in pieces so that this file, which the scan also reads, never contains
# them whole; the pattern they form is what a file must not contain.
ROUND = "ses" "sion"
WORDING = ["moon" "shot", "device " "budget", "this " "task", "the " "issue"]

# (name, pattern): what must not appear, case-insensitive.
FORBIDDEN = [
    ("development round", re.compile(rf"\b{ROUND}s?\b", re.IGNORECASE)),
    ("development round", re.compile(rf"\b{ROUND}[-_ ]?\d+", re.IGNORECASE)),
    ("development round", re.compile(r"(^|[/\s\"'(`])s\d{1,2}(_[a-z0-9]+)*/")),  # folders such as s11/
    ("development wording", re.compile("|".join(rf"\b{word}\b" for word in WORDING), re.IGNORECASE)),
    ("our own issue numbers", re.compile(r"\bissues? #?\d+\b", re.IGNORECASE)),
    ("path outside the repository", re.compile(r"\.\./shared|\bDESIGN\.md\b|\bFYC_METHOD\.md\b")),
    ("machine-local path", re.compile(r"(?<![\w.])/tmp/")),
]

# Exact substrings that make a matching line legitimate.
ALLOWED = [
    f'scope="{ROUND}"',  # pytest fixture scope
    "requests.Session",
    "Session()",  # requests / aiohttp sessions
    "pytest_session",
    "sessionstart",
    "sessionfinish",
]

# The one place the tests find the real assets: FYC_TEST_ASSETS, defaulting to the folder
# beside the repository where CI keeps them (tests/conftest.py).
ALLOWED_FILES = {"tests/conftest.py", "tests/test_repository_hygiene.py"}

BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".mp4", ".webm", ".tar", ".npy", ".pth", ".ckpt",
                   ".parquet", ".safetensors", ".bin", ".pt", ".whl", ".gz", ".zip"}


def _repository_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout
    return [p for p in out.splitlines() if (REPO / p).is_file()]


def _violations_in(text: str, where: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for name, pattern in FORBIDDEN:
            if pattern.search(line) and not any(ok in line for ok in ALLOWED):
                found.append(f"{where}:{number}: {name}: {line.strip()[:160]}")
                break
    return found


def test_no_development_history_or_outside_paths_in_any_file() -> None:
    files = _repository_files()
    assert len(files) > 100, f"git ls-files found only {len(files)} files: is this a checkout?"
    violations = []
    for path in files:
        violations += [v for v in _violations_in(path, "file name") if "path outside" not in v]
        if path in ALLOWED_FILES or Path(path).suffix.lower() in BINARY_SUFFIXES:
            continue
        try:
            text = (REPO / path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        violations += _violations_in(text, path)
    assert not violations, "development history or outside paths:\n" + "\n".join(violations[:80]) + (
        f"\n... and {len(violations) - 80} more" if len(violations) > 80 else "")


def test_the_scan_catches_what_it_is_meant_to_catch() -> None:
    caught = [
        f"the recipe of {ROUND} 11",
        "docs/moving_shapes/s11/curve.png",
        "see ../shared/DESIGN.md",
        '"out": "/tmp/ci/run1"',
        "fixed in issue 24",
        f"the {WORDING[0]}",
    ]
    for line in caught:
        assert _violations_in(line, "x"), line
    for line in [f'@pytest.fixture(scope="{ROUND}")', "with requests.Session() as s:", "the s3 bucket",
                 "stage 1 (256 px)", "dmlc/decord#269", "tmp_path / 'out'"]:
        assert not _violations_in(line, "x"), line
