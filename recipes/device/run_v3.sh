#!/usr/bin/env bash
# Study v3's tasks on a GPU machine, each task whole (results/v3/PREREGISTRATION.md: one device and one precision
# for every run of a task), from a bundle of recipes/device/bundle_study.py made with --study_dir runs/v3:
#   bash recipes/device/run_v3.sh BUNDLE OUT SECONDS TASK...
# Per task, in parallel: the teachers and logits where the bundle has none (compare.py, `none`, seed 42), then the
# runs `make study-v3` makes, as one queue of compare.py runs (a method and a seed each), WORKERS at a time, in the
# plan's order of importance, so that a deadline cuts the least important: the config's 5-seed methods ('single'
# first: one run per teacher), `fitted` and `confidence` with 3 seeds, for mrpc and mnli the four 3-seed methods,
# for mnli the 6-layer student (runs/v3-6layer, on the same teachers). Everything stops SECONDS after the script
# starts (leave a minute for the tar within the call's limit); finished runs are reused, also those whose records
# the bundle carries. OUT gets summary.txt and study.tgz: the records, logit datasets and validation logits (no
# weights: too large to bring back) and the logs; unpack it into the study's runs/ folder (`tar xzf -C runs`).
# Environment: WORKERS (runs at a time, default 8: a 3-layer student leaves a GPU mostly idle), MIN_LEFT (start no
# run with fewer seconds left, default 0), EXTRA_ARGS (more arguments for every run), PYTHON.
set -uo pipefail
BUNDLE=$1 OUT=$2 END=$(($(date +%s) + $3))
shift 3
PYTHON=${PYTHON:-python3}
read -ra EXTRA <<<"${EXTRA_ARGS:-}"
if [ -d "$BUNDLE/wheels" ] && [ -z "${SKIP_INSTALL:-}" ]; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$BUNDLE"/wheels/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$BUNDLE/site:$PWD DISTILL_TRAINER_CACHE=$BUNDLE/cache
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
$PYTHON recipes/device/bundle_study.py --unpack "$BUNDLE" || exit 1
$PYTHON -c "import torch, transformers, datasets, distill_trainer; print('torch', torch.__version__, 'cuda',
torch.cuda.is_available(), 'transformers', transformers.__version__, 'datasets', datasets.__version__)" || exit 1
RUNS=$BUNDLE/runs LOGS=$BUNDLE/logs
mkdir -p "$LOGS" "$OUT"
SIX_LAYER=(--student_layers 0,1,2,3,4,5 --study_dir "$RUNS/v3-6layer" --teachers_from "$RUNS/v3")

run() {  # run NAME COMMAND...: timed, logged to LOGS/NAME.log, stopped at the deadline
    local name=$1 left=$((END - $(date +%s))) start=$(date +%s)
    shift
    if [ "$left" -le "${MIN_LEFT:-0}" ]; then  # and never at 0 left: `timeout 0` would mean no limit at all
        echo "$name: not started (deadline)" | tee -a "$OUT/summary.txt"
        return
    fi
    timeout "$left" "$@" "${EXTRA[@]}" >"$LOGS/$name.log" 2>&1
    echo "$name: exit $? after $(($(date +%s) - start)) s" | tee -a "$OUT/summary.txt"
}

config_list() {  # config_list FILE KEY: a config's comma-separated list, space-separated
    sed -n "s/^$2: *\"\{0,1\}\([^\" #]*\).*/\1/p" "$1" | tr , ' '
}

plan() {  # plan TASK: the task's student runs, one "STUDY METHOD SEED" line each, most important first
    local config=recipes/configs/v3_$1.yaml method seed study
    for study in v3 $([ "$1" = mnli ] && echo v3-6layer); do
        for method in $(config_list "$config" methods | sed 's/\bsingle\b//;s/^/single /'); do
            for seed in $(config_list "$config" seeds); do echo "$study $method $seed"; done
        done
        for method in fitted confidence; do for seed in 42 43 44; do echo "$study $method $seed"; done; done
        if [ "$study" = v3 ] && { [ "$1" = mrpc ] || [ "$1" = mnli ]; }; then
            for method in min_entropy gating average+calibrated average_to_confidence; do
                for seed in 42 43 44; do echo "$study $method $seed"; done
            done
        fi
    done
}

task_runs() {  # task_runs TASK: its teachers, then its queue
    local task=$1 study method seed
    local compare=($PYTHON recipes/compare.py --config "recipes/configs/v3_$task.yaml" --data "$BUNDLE/data/glue")
    if [ ! -f "$RUNS/v3/$task/logits/dataset_dict.json" ]; then
        run "$task-teachers" "${compare[@]}" --study_dir "$RUNS/v3" --methods none --seeds 42 \
            --results_csv "$RUNS/v3/$task-teachers.csv"
    fi
    [ -f "$RUNS/v3/$task/logits/dataset_dict.json" ] || return
    while read -r study method seed; do
        while [ "$(jobs -rp | wc -l)" -ge "${WORKERS:-8}" ]; do wait -n; done
        if [ $((END - $(date +%s))) -le "${MIN_LEFT:-0}" ]; then
            echo "$task: queue stopped at $study $method, seed $seed (deadline)" | tee -a "$OUT/summary.txt"
            break
        fi
        local where=(--study_dir "$RUNS/v3")
        [ "$study" = v3-6layer ] && where=("${SIX_LAYER[@]}")
        run "$task-$study-$method-$seed" "${compare[@]}" "${where[@]}" --methods "$method" --seeds "$seed" \
            --results_csv "$RUNS/$study/$task-$method-$seed.csv" &
        sleep 2  # the first run writes the tokenization caches the others then read
    done < <(plan "$task")
    wait
}

START=$(date +%s)
for task in "$@"; do
    task_runs "$task" &
done
wait
echo "all runs: $(($(date +%s) - START)) s" | tee -a "$OUT/summary.txt"
nvidia-smi --query-gpu=name,memory.used --format=csv >>"$OUT/summary.txt" 2>&1
# not the 6-layer study's link to the teachers (it points into this machine's bundle)
tar czf "$OUT/study.tgz" -C "$RUNS" --exclude model.safetensors --exclude "*.bin" --exclude "checkpoint-*" \
    --exclude "tokenizer*" --exclude "cache-*" --exclude "v3-6layer/*/teacher-*" --exclude "v3-6layer/*/logits" \
    $(cd "$RUNS" && ls -d v3 v3-6layer 2>/dev/null) -C .. logs
