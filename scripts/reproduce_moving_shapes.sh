#!/usr/bin/env bash
# Reproduce the MovingShapes headline table (docs/moving_shapes.md) from nothing, on CPU:
#   corpus -> fyc-preprocess -> stage 1 (experiment=moving_shapes) -> stage 2
#   (experiment=moving_shapes_blend) -> fyc-eval-shapes on 16 held-out scenes (192 videos) at
#   CFG 1.25 and 1.0 -> OUT/results.json + OUT/results.md (metrics and wall time per stage).
#
#   scripts/reproduce_moving_shapes.sh --raft-weights PATH/raft_small_torchvision.pth [--out out/ms_repro]
#
# The RAFT-small weights (torchvision key format) come from --raft-weights or FYC_RAFT_WEIGHTS;
# `--raft-weights default` lets torchvision download them (online machines only).
# About 48 minutes on an idle 2-core CPU machine. A stage whose output exists is skipped, so an
# interrupted run continues where it stopped (delete OUT to start over).
# Smaller smoke runs (not the recipe): FYC_MS_VIDEOS, FYC_MS_STAGE1_STEPS, FYC_MS_STAGE2_STEPS,
# FYC_MS_EVAL_SCENES (scenes per seed) override the recipe's 960 / 1750 / 900 / 8.
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

OUT=out/ms_repro
RAFT="${FYC_RAFT_WEIGHTS:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --raft-weights) RAFT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$RAFT" ]; then
  echo "RAFT weights not given: pass --raft-weights PATH (raft_small_torchvision.pth) or set FYC_RAFT_WEIGHTS;" \
       "'--raft-weights default' downloads torchvision's (needs internet)" >&2
  exit 2
fi
if [ "$RAFT" != default ] && [ ! -f "$RAFT" ]; then
  echo "--raft-weights $RAFT: no such file" >&2
  exit 2
fi

REPO="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${FYC_BIN:-$REPO/.venv/bin}"          # fyc-* entry points; falls back to PATH
[ -x "$BIN/fyc-train" ] || BIN="$(dirname "$(command -v fyc-train)")"
PY="${FYC_PYTHON:-$BIN/python}"
[ -x "$PY" ] || PY=python

VIDEOS="${FYC_MS_VIDEOS:-960}"
STAGE1_STEPS="${FYC_MS_STAGE1_STEPS:-1750}"
STAGE2_STEPS="${FYC_MS_STAGE2_STEPS:-900}"
SCENES="${FYC_MS_EVAL_SCENES:-8}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
TIMES="$OUT/stage_times.tsv"
# one run on both cores is the recipe's timing (two runs side by side take ~3x as long each)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

# run_stage NAME DONE_FILE CMD...: runs CMD unless DONE_FILE exists, logs to OUT/logs/NAME.log,
# appends "NAME<TAB>seconds" to stage_times.tsv.
run_stage() {
  local name="$1" done_file="$2"; shift 2
  if [ -e "$done_file" ]; then echo "[$name] done already ($done_file)"; return; fi
  mkdir -p "$OUT/logs"
  echo "[$name] $(date -u +%H:%M:%S) start: $*"
  local start; start=$(date +%s.%N)
  "$@" >"$OUT/logs/$name.log" 2>&1 || { echo "[$name] failed, see $OUT/logs/$name.log" >&2; tail -20 "$OUT/logs/$name.log" >&2; exit 1; }
  local seconds; seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  printf '%s\t%s\n' "$name" "$seconds" >>"$TIMES"
  echo "[$name] $(date -u +%H:%M:%S) done in ${seconds} s"
}

# 1. corpus: 240 scenes x 4 directions, 64x64, 8 frames
run_stage corpus "$OUT/corpus/manifest.csv" \
  "$BIN/fyc-make-corpus" --out "$OUT/corpus" --num-videos "$VIDEOS" --seed 0 --size 64 64 --frames 8 \
  --speed-range 0.5 3.0 --motions-per-scene 4

# 2. labels: the clicked object's first-frame mask, magnitudes from RAFT at flow 256 over the mask's core
run_stage preprocess "$OUT/pre/manifest.parquet" \
  "$BIN/fyc-preprocess" input.manifest="$OUT/corpus/manifest.csv" output.dir="$OUT/pre" \
  clip.num_frames=8 clip.stride=1 'clip.size=[64,64]' flow.size=256 flow.num_updates=6 flow.mask_region=first \
  flow.core_fraction=0.8 shard.max_samples=160 flow.weights="$RAFT" ray.flow_threads=2

DATA=(paths.output_dir="$OUT/runs" callbacks.last_checkpoint.save_top_k=-1 checkpoint_every_n_steps=250
      export.enabled=false "data.shards=$OUT/pre/shards/*.tar" "data.val_shards=$OUT/pre/shards/shard-000000.tar")

# 3. stage 1: the motion (1,750 steps of a cosine over 3,000)
run_stage stage1 "$OUT/runs/stage1/checkpoints/last.ckpt" \
  "$BIN/fyc-train" experiment=moving_shapes "${DATA[@]}" run_name=stage1 trainer.max_steps="$STAGE1_STEPS"

# 4. stage 2: the copy gate with its target (weight 0.3), 900 steps from stage 1's last step
run_stage stage2 "$OUT/runs/stage2/checkpoints/last.ckpt" \
  "$BIN/fyc-train" experiment=moving_shapes_blend "${DATA[@]}" run_name=stage2 trainer.max_steps="$STAGE2_STEPS" \
  module.init_from="$OUT/runs/stage1/checkpoints/last.ckpt"

# 5. evaluation: 2 x SCENES held-out scenes (seeds 0 and 1) x 4 directions x 3 speeds, 1 DDIM step,
#    the model's own frame 0, at CFG 1.25 and 1.0; then the MA ablation on 4 scenes
CK="$OUT/runs/stage2/checkpoints/last.ckpt"
E=(checkpoint="$CK" flow_size=256 'magnitudes=[4,7,10]' 'impose_first_frame=[false]' num_scenes="$SCENES")
for g in 1.25 1.0; do
  for seed in 0 1; do
    run_stage "eval_cfg${g}_seed${seed}" "$OUT/eval/cfg${g}_seed${seed}/metrics.json" \
      "$BIN/fyc-eval-shapes" "${E[@]}" seed="$seed" guidance="$g" out="$OUT/eval/cfg${g}_seed${seed}"
  done
done
"$PY" "$REPO/bench/moving_shapes_results.py" --out "$OUT"
run_stage eval_ma_zero "$OUT/eval/ma_zero/metrics.json" \
  "$BIN/fyc-eval-shapes" checkpoint="$CK" flow_size=256 'magnitudes=[4,7,10]' 'impose_first_frame=[false]' \
  num_scenes=4 guidance=1.0 ablate=ma_zero out="$OUT/eval/ma_zero"
"$PY" "$REPO/bench/moving_shapes_results.py" --out "$OUT"
