#!/usr/bin/env bash
# Submit fyc-preprocess to a running Ray cluster (ray job submit).
#
#   RAY_ADDRESS=http://head:8265 jobs/ray_submit.sh input.manifest=/data/webvid.csv \
#       input.format=webvid output.dir=/data/out ray.flow_actors=8
#
# Every argument is passed through to fyc-preprocess as one Hydra override, as a separate argv
# element: nothing from the manifest or the config is ever pasted into a shell command line.
# ray.address=auto is prepended so the driver joins the cluster instead of starting a local Ray.
# Environment: RAY_ADDRESS (dashboard address, default http://127.0.0.1:8265),
# FYC_RUNTIME_ENV (a runtime_env JSON/YAML file, default: working_dir upload + pip install of this repo).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
address="${RAY_ADDRESS:-http://127.0.0.1:8265}"

runtime_env_args=()
if [[ -n "${FYC_RUNTIME_ENV:-}" ]]; then
  runtime_env_args=(--runtime-env "${FYC_RUNTIME_ENV}")
else
  # The working dir (this repo, without venvs/outputs) is uploaded; workers install it with pip.
  runtime_env_args=(--runtime-env-json '{"pip": ["-e ."], "excludes": [".venv", "out*", "outputs", "wandb", ".git"]}')
fi

exec ray job submit \
  --address "${address}" \
  --working-dir "${repo_root}" \
  "${runtime_env_args[@]}" \
  -- fyc-preprocess ray.address=auto "$@"
