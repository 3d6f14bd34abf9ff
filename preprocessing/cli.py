"""`fyc-preprocess`: Hydra entry point (config conf/preprocess/preprocess.yaml, `key=value` overrides)."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from preprocessing.config import ConfigError, register_schema, validate
from fyc_conf import config_dir

CONF_DIR = config_dir("preprocess")
log = logging.getLogger("fyc.preprocess")

register_schema()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="preprocess")
def _main(cfg: DictConfig) -> None:
    from preprocessing.cluster import ClusterError
    from preprocessing.lock import OutputLockedError
    from preprocessing.shards import ShardWriteError
    from preprocessing.sources.rows import InputError

    try:
        validate(cfg)
    except ConfigError as exc:
        log.error("invalid config: %s", exc)
        sys.exit(2)
    from preprocessing.pipeline import run

    try:
        summary = run(cfg)
    except ConfigError as exc:  # checked against the cluster (flow.device, ray.flow_actors)
        log.error("invalid config: %s", exc)
        sys.exit(2)
    except (OutputLockedError, InputError, ShardWriteError, ClusterError) as exc:
        log.error("%s", exc)
        sys.exit(3)
    log.info("done: %d rows (%d processed this run) in %.1fs -> %s", summary.num_rows,
             summary.rows_processed, summary.wall_s, summary.output_dir)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
