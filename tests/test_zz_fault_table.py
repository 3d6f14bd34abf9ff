"""Runs last (file order): renders the fault records of this pytest run into the fault table.

With FYC_FAULT_TABLE=<path> set, the table is written there (docs/faults.md); otherwise it is only
rendered and checked, so an ordinary CI run never edits the checkout.
"""

from __future__ import annotations

import os
import re
from fnmatch import fnmatch
from pathlib import Path

from fault_table import RECORDS, render

# the whole suite: fault tests live in many modules, and this one runs last
COMMAND = "FYC_FAULT_TABLE=docs/faults.md .venv/bin/python -m pytest"


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


def passed_fault_tests(config) -> set[str]:
    """Names of the tests that passed in this run and call record_fault themselves."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    passed = [r for r in (reporter.stats.get("passed", []) if reporter else []) if r.when == "call"]
    names = set()
    for report in passed:
        path, _, name = report.nodeid.partition("::")
        name = name.split("[")[0]
        source = (REPO / path).read_text() if (REPO / path).is_file() else ""
        body = re.search(rf"\ndef {re.escape(name)}\(.*?(?=\n(?:def |class |@)|\Z)", source, re.S)
        if body and "record_fault(" in body.group(0):
            names.add(name)
    return names


def test_fault_table_renders_every_recorded_fault(tmp_path, request):
    """Every fault test that passed recorded its row, and a table is never rendered empty."""
    expected = passed_fault_tests(request.config)
    # a record names its test, or a family of tests (`test_train_*`) that share one row
    named = [name for record in RECORDS for name in re.findall(r"test_[A-Za-z0-9_*]+", record.test.split("::")[-1])]
    missing = sorted(name for name in expected if not any(fnmatch(name, pattern) for pattern in named))
    assert not missing, f"fault tests passed without recording their fault: {missing}"
    if os.environ.get("FYC_FAULT_TABLE"):
        assert RECORDS, "FYC_FAULT_TABLE is set but no fault was recorded: run the fault tests in the same run"
    if not RECORDS:  # no fault test ran (e.g. this module alone): the committed table was checked above
        return
    text = render(RECORDS, COMMAND)
    assert text.count("\n| ") - text.count("\n| ---") - text.count("\n| fault injected") == len(RECORDS)
    for record in RECORDS:
        assert record.outcome and record.test
    target = Path(os.environ.get("FYC_FAULT_TABLE") or tmp_path / "faults.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    print(f"fault table: {len(RECORDS)} faults -> {target}")
