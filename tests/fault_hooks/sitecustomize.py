"""Fault injection for the end-to-end tests: a decoder that hangs.

Put this folder on PYTHONPATH and set FYC_FAULT_HANG_DECODE=<mark>: in every Python process
of the job (the CLI, Ray workers, the decode worker child), `decord.VideoReader` on a file whose
name contains <mark> blocks forever, as decord does on some broken streams (dmlc/decord#269,
#363). Nothing in the package knows about this: the hang is injected into the real decoder
library at import time, so the watchdog under test is the production one.
When FYC_FAULT_HANG_LOG is set, the hung process appends `<pid> <unix time>` there first, so a
test can measure how long the job took to notice.
"""

import importlib.abc
import importlib.util
import os
import sys
import time

_MARK = os.environ.get("FYC_FAULT_HANG_DECODE")


class _HangingDecordFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "decord":
            return None
        sys.meta_path.remove(self)  # find the real module, then wrap its loader
        spec = importlib.util.find_spec("decord")
        if spec is None or spec.loader is None:
            return spec
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            real_reader = module.VideoReader

            def VideoReader(uri, *args, **kwargs):  # noqa: N802 - same name as decord's
                if _MARK and _MARK in os.path.basename(str(uri)):
                    log = os.environ.get("FYC_FAULT_HANG_LOG")
                    if log:
                        with open(log, "a") as f:
                            f.write(f"{os.getpid()} {time.time()}\n")
                    while True:
                        time.sleep(3600)
                return real_reader(uri, *args, **kwargs)

            module.VideoReader = VideoReader

        spec.loader.exec_module = exec_module
        return spec


if _MARK:
    sys.meta_path.insert(0, _HangingDecordFinder())
