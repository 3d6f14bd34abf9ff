"""`fyc-curate`: Hydra entry point (conf/curate/curate.yaml), and `fyc-curate inspect DIR` (argparse).

`inspect` is a subcommand rather than a Hydra mode: it reads one folder and takes no config,
and Hydra would otherwise create its run folder and log files for a read-only look.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from preprocessing.config import ConfigError
from preprocessing.curation.config import register_schema, validate
from fyc_conf import config_dir

CONF_DIR = config_dir("curate")
log = logging.getLogger("fyc.curate")

register_schema()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="curate")
def _main(cfg: DictConfig) -> None:
    from preprocessing.curation.members import MemberError
    from preprocessing.curation.pipeline import CurationMismatchError, run
    from preprocessing.lock import OutputLockedError
    from preprocessing.shards import ShardWriteError

    try:
        validate(cfg)
        summary = run(cfg)
    except ConfigError as exc:
        log.error("invalid config: %s", exc)
        sys.exit(2)
    except (OutputLockedError, CurationMismatchError, ShardWriteError, MemberError) as exc:
        log.error("%s", exc)
        sys.exit(3)
    log.info("done: %d input rows, %d kept (%d written this run, %d id collisions) in %.1fs -> %s",
             summary.num_rows, summary.kept, summary.rows_processed, summary.collisions, summary.wall_s,
             summary.output_dir)


def quote_query(arg: str) -> str:
    """`select.query=magnitude > 1` -> `select.query='magnitude > 1'`: Hydra's override grammar
    refuses `>`, `<`, `=`, `(` in unquoted values, and a pandas query is full of them."""
    key, sep, value = arg.partition("=")
    if key.lstrip("+~") != "select.query" or not sep or value[:1] in ("'", '"') or value == "null":
        return arg
    if "'" not in value:
        return f"{key}='{value}'"
    if '"' not in value:
        return f'{key}="{value}"'
    return key + "='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "inspect":
        from preprocessing.curation.inspect import main as inspect_main

        sys.exit(inspect_main(sys.argv[2:]))
    sys.argv[1:] = [quote_query(a) for a in sys.argv[1:]]
    _main()


if __name__ == "__main__":
    main()
