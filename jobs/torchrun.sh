#!/usr/bin/env bash
# fyc-train under torchrun (any cluster without SLURM; one node or several).
# torchrun starts one process per GPU and sets RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR, which
# Lightning's TorchElasticEnvironment reads; Lightning does not re-launch processes itself.
# run_name must be the same on every node (and on restarts) so all ranks share the pinned run
# directory and auto-resume from its last.ckpt:
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 RUN_NAME=stage1-a jobs/torchrun.sh experiment=stage1_256 data.shards=...
# TRAINER picks the trainer config (default ddp: GPUs, NCCL; ddp_cpu: CPU processes over gloo).
#   NPROC_PER_NODE=2 TRAINER=ddp_cpu RUN_NAME=cpu-a jobs/torchrun.sh experiment=tiny data.shards=...
set -euo pipefail
NPROC="${NPROC_PER_NODE:-$(nvidia-smi -L 2>/dev/null | wc -l)}"
NPROC="${NPROC:-1}"
RUN_NAME="${RUN_NAME:?set RUN_NAME (identical on every node; re-use it to resume)}"
exec torchrun \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --nproc_per_node="${NPROC}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  -m fyc_train.cli.train \
  trainer="${TRAINER:-ddp}" trainer.num_nodes="${NNODES:-1}" trainer.devices="${NPROC}" run_name="${RUN_NAME}" \
  "$@"
