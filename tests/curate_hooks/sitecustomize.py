"""Fault injection for the fyc-curate kill test: slow shard commits.

Put this folder on PYTHONPATH and set FYC_FAULT_SLOW_SHARD_COMMIT=<seconds>: in every Python
process of the job (the CLI and its local Ray workers), `os.replace` of a `*.tar.tmp` onto its
shard sleeps that long first, so a test can SIGKILL the job between two shard commits. Nothing
in the package knows about this; the code under test is the production one.
"""

import os
import time

_DELAY = float(os.environ.get("FYC_FAULT_SLOW_SHARD_COMMIT") or 0)

if _DELAY > 0:
    _real_replace = os.replace

    def _slow_replace(src, dst, *args, **kwargs):
        if str(src).endswith(".tar.tmp"):
            time.sleep(_DELAY)
        return _real_replace(src, dst, *args, **kwargs)

    os.replace = _slow_replace
