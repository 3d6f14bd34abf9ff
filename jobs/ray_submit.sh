#!/usr/bin/env bash
# Submit fyc-preprocess to a running Ray cluster (ray job submit). See docs/clusters.md,
# "Preprocessing on a Ray cluster".
#
#   RAY_ADDRESS=http://head:8265 RAY_AUTH_TOKEN_PATH=~/fyc-cluster.token jobs/ray_submit.sh \
#       input.manifest=/data/webvid.csv input.format=webvid output.dir=/data/out ray.flow_actors=8
#
# Every argument is passed through to fyc-preprocess as one Hydra override, as a separate argv
# element: nothing from the manifest or the config is ever pasted into a shell command line.
# ray.address=auto is prepended so the driver joins the cluster instead of starting a local Ray.
#
# Environment:
#   RAY_ADDRESS       the head's dashboard (job API), default http://127.0.0.1:8265
#   RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token
#                     the cluster's token (Ray token authentication); when one is present and
#                     RAY_AUTH_MODE is unset, RAY_AUTH_MODE=token is set so the token is sent.
#   FYC_RUNTIME_ENV   a runtime_env JSON/YAML file replacing the default below
#   FYC_RUNTIME_PIP=1 also `pip install -e .` the uploaded checkout on every node (needs the
#                     package index from the nodes); default: the nodes' Python (the image) has
#                     fyc's dependencies and only this checkout's code is shipped.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
address="${RAY_ADDRESS:-http://127.0.0.1:8265}"

if [[ -z "${RAY_AUTH_MODE:-}" ]] && { [[ -n "${RAY_AUTH_TOKEN:-}" ]] || [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]] \
    || [[ -f "${HOME}/.ray/auth_token" ]]; }; then
  export RAY_AUTH_MODE=token
fi

excludes='".venv", ".git", "out*", "outputs", "runs", "wandb", "__pycache__"'
runtime_env_args=()
if [[ -n "${FYC_RUNTIME_ENV:-}" ]]; then
  runtime_env_args=(--runtime-env "${FYC_RUNTIME_ENV}")
elif [[ "${FYC_RUNTIME_PIP:-0}" == "1" ]]; then
  runtime_env_args=(--runtime-env-json "{\"pip\": [\"-e .\"], \"excludes\": [${excludes}]}")
else
  # The working dir (this checkout's code, without venvs/outputs) is uploaded and put first on
  # every worker's and the driver's sys.path.
  runtime_env_args=(--runtime-env-json "{\"excludes\": [${excludes}]}")
fi

exec ray job submit \
  --address "${address}" \
  --working-dir "${repo_root}" \
  "${runtime_env_args[@]}" \
  -- fyc-preprocess ray.address=auto "$@"
