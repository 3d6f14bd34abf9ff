#!/usr/bin/env bash
# MovingShapes on one GPU, end to end: several runs of experiment=moving_shapes_gpu trained side
# by side on the same GPU (measured on an H200: 4 runs at 1.5 steps/s each, 6.1 together, vs
# 4.1 for one bf16 run alone), then every run's learning curve and final evaluation, the MA ablation
# and the untrained baseline, in parallel processes on the CPU cores.
#
#   SHARDS=out/ms_pre5_flow256/shards TRAIN_TIME=00:00:40:00 bash bench/moving_shapes_gpu.sh
#
# Each line of RUNS is "name [hydra overrides...]" on top of experiment=moving_shapes_gpu; the
# MA ablation and the untrained baseline are measured on the runs named in ABLATE_RUNS (default:
# the first run).
# A run that fails stops them all at once (a typo should not cost the GPU's time budget).
# Outputs: $OUT_DIR/runs/<name>/ (checkpoints, logs), $OUT_DIR/eval/<name>{,_ma_zero,_untrained}/
# (metrics.json, sheets/), $OUT_DIR/curves/<name>/curve.{json,png}, $OUT_DIR/summary.txt.
set -euo pipefail

SHARDS=${SHARDS:-out/ms_pre5_flow256/shards}
FLOW_SIZE=${FLOW_SIZE:-256}          # the shards' fyc-preprocess flow.size: the unit of the magnitudes
MAGNITUDES=${MAGNITUDES:-"4 7 10"}   # 1, 1.75, 2.5 px/frame at 64 px and flow 256 (at 128: "2 3.5 5")
OUT_DIR=${OUT_DIR:-out/gpu}
TRAIN_TIME=${TRAIN_TIME:-00:00:40:00}   # DD:HH:MM:SS per run (Lightning's max_time)
CKPT_EVERY_S=${CKPT_EVERY_S:-300}    # a curve point every this many seconds of training
CURVE_SCENES=${CURVE_SCENES:-2}      # 2 scenes x 4 directions x 3 magnitudes = 24 videos per point
FINAL_SCENES=${FINAL_SCENES:-4}      # 48 videos, as in docs/moving_shapes.md
EVAL_THREADS=${EVAL_THREADS:-2}
PYTHON=${PYTHON:-python}
CURVE_JOBS=${CURVE_JOBS:-3}          # checkpoints of one curve evaluated in parallel
WIDE="model.unet.block_out_channels=[96,192]"  # first level wider than the 48-channel latent
RUNS=${RUNS:-"recipe
paper_masking module.first_frame_mask_ratio=null
wide $WIDE
wide_paper_masking $WIDE module.first_frame_mask_ratio=null"}

ls "$SHARDS"/*.tar >/dev/null || { echo "no shards in SHARDS=$SHARDS: run fyc-preprocess first" >&2; exit 2; }
mkdir -p "$OUT_DIR/logs"
export PYTHONUNBUFFERED=1
COMMON=(experiment=moving_shapes_gpu "paths.output_dir=$OUT_DIR/runs" callbacks.last_checkpoint.save_top_k=-1
        checkpoint_every_n_steps=null export.enabled=false
        "+callbacks.last_checkpoint.train_time_interval={_target_:datetime.timedelta,seconds:$CKPT_EVERY_S}" "data.shards=$SHARDS/*.tar"
        "data.val_shards=$SHARDS/shard-000000.tar" "trainer.max_time=$TRAIN_TIME"
        trainer.enable_progress_bar=false)

echo "== training $(echo "$RUNS" | grep -c .) runs side by side for $TRAIN_TIME ($(date +%T))"
names=()
declare -A run_of_pid
while read -r name overrides; do
  [ -z "$name" ] && continue
  # shellcheck disable=SC2086  # overrides are word-split on purpose
  OMP_NUM_THREADS=2 $PYTHON -m fyc_train.cli.train "${COMMON[@]}" "run_name=$name" $overrides \
    > "$OUT_DIR/logs/train_$name.log" 2>&1 &
  names+=("$name")
  run_of_pid[$!]=$name
done <<< "$RUNS"
failed=0
for _ in "${names[@]}"; do
  wait -n -p pid || {
    name=${run_of_pid[$pid]}
    echo "training run $name failed: stopping the others; tail of $OUT_DIR/logs/train_$name.log" >&2
    tail -20 "$OUT_DIR/logs/train_$name.log" >&2
    kill "${!run_of_pid[@]}" 2>/dev/null || true
    wait
    exit 1
  }
done
echo "== training done ($(date +%T))"

# Steps reached and steps/s, from the kept checkpoints' file times (the curve's own clock).
$PYTHON - "$OUT_DIR/runs" "${names[@]}" <<'EOF' | tee "$OUT_DIR/summary.txt"
import sys
from pathlib import Path
sys.path.insert(0, "bench")
from moving_shapes_curve import checkpoints, run_start
root = Path(sys.argv[1])
for name in sys.argv[2:]:
    try:
        step, path = checkpoints(root / name)[-1]
    except SystemExit:
        print(f"{name}: no checkpoints")
        continue
    minutes = (path.stat().st_mtime - run_start(root / name)) / 60
    print(f"{name}: step {step} after {minutes:.1f} min = {step / (minutes * 60):.1f} steps/s (incl. start, validation, checkpoints)")
EOF

echo "== evaluating: curves ($CURVE_SCENES scenes per point) and final ($FINAL_SCENES scenes) ($(date +%T))"
export OMP_NUM_THREADS=$EVAL_THREADS
eval_pids=()
for name in "${names[@]}"; do
  run_dir="$OUT_DIR/runs/$name"
  [ -f "$run_dir/checkpoints/last.ckpt" ] || continue
  $PYTHON bench/moving_shapes_curve.py --run-dir "$run_dir" --out "$OUT_DIR/curves/$name" \
    --num-scenes "$CURVE_SCENES" --threads "$EVAL_THREADS" --jobs "$CURVE_JOBS" \
    --flow-size "$FLOW_SIZE" --magnitudes $MAGNITUDES \
    --minutes-label "1 GPU shared by ${#names[@]} runs" > "$OUT_DIR/logs/curve_$name.log" 2>&1 &
  eval_pids+=($!)
  $PYTHON -m fyc_train.cli.eval_shapes "checkpoint=$run_dir/checkpoints/last.ckpt" "num_scenes=$FINAL_SCENES" \
    "out=$OUT_DIR/eval/$name" "flow_size=$FLOW_SIZE" "magnitudes=[${MAGNITUDES// /,}]" \
    > "$OUT_DIR/logs/eval_$name.log" 2>&1 &
  eval_pids+=($!)
done
for name in ${ABLATE_RUNS:-${names[0]}}; do
  ckpt="$OUT_DIR/runs/$name/checkpoints/last.ckpt"
  [ -f "$ckpt" ] || continue
  for ablation in ma_zero untrained; do
    $PYTHON -m fyc_train.cli.eval_shapes "checkpoint=$ckpt" "num_scenes=$FINAL_SCENES" \
      "impose_first_frame=[false]" "ablate=$ablation" "out=$OUT_DIR/eval/${name}_$ablation" \
      "flow_size=$FLOW_SIZE" "magnitudes=[${MAGNITUDES// /,}]" \
      > "$OUT_DIR/logs/eval_${name}_$ablation.log" 2>&1 &
    eval_pids+=($!)
  done
done
for pid in "${eval_pids[@]}"; do wait "$pid" || failed=1; done
echo "== evaluation done ($(date +%T))"
for log in "$OUT_DIR"/logs/eval_*.log; do
  echo "--- $(basename "$log" .log)"
  grep -E "^\| (direction|locality|speed_spearman |speed_within|i1_mse)" "$log" || tail -5 "$log"
done | tee -a "$OUT_DIR/summary.txt"
exit $failed
