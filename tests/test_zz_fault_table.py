"""Runs last (file order): renders the fault records of this pytest run into the fault table.

With FYC_FAULT_TABLE=<path> set, the table is written there (docs/faults.md); otherwise it is only
rendered and checked, so an ordinary CI run never edits the checkout.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from fault_table import RECORDS, render

COMMAND = ("FYC_FAULT_TABLE=docs/faults.md .venv/bin/python -m pytest tests/test_preprocess_e2e.py "
           "tests/test_faults_preprocess.py tests/test_faults_config.py tests/test_security.py "
           "tests/test_train_e2e.py tests/test_datamodule.py tests/test_zz_fault_table.py")


REPO = Path(__file__).resolve().parents[1]


def test_committed_fault_table_names_tests_that_exist():
    """docs/faults.md (committed) must point at tests that exist: a renamed or deleted fault test
    leaves a row nobody can rerun. Runs in every pytest run, with or without fault records."""
    table = (REPO / "docs" / "faults.md").read_text()
    assert COMMAND in table, "docs/faults.md's regenerate command differs from COMMAND: update its header"
    refs = re.findall(r"`(test_[a-z0-9_]+\.py)::(test_[A-Za-z0-9_*]+)`", table)
    assert refs, "docs/faults.md has no test references"
    for file, name in refs:
        source = (REPO / "tests" / file).read_text()
        pattern = re.escape(name).replace(r"\*", "[A-Za-z0-9_]*")  # `test_sample_*` rows name a family
        assert re.search("def " + pattern + r"\(", source), f"docs/faults.md names {file}::{name}: not found"


def test_fault_table_renders_every_recorded_fault(tmp_path):
    if not RECORDS:  # this module alone: the committed table was checked above, nothing to render
        return
    text = render(RECORDS, COMMAND)
    assert text.count("\n| ") - text.count("\n| ---") - text.count("\n| fault injected") == len(RECORDS)
    for record in RECORDS:
        assert record.outcome and record.test
    target = Path(os.environ.get("FYC_FAULT_TABLE") or tmp_path / "faults.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    print(f"fault table: {len(RECORDS)} faults -> {target}")
