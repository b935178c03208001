# Sourced by run_study.sh and run_v3.sh (bash SCRIPT BUNDLE OUT SECONDS TASK...): reads BUNDLE, OUT and the deadline
# END from the arguments, installs the bundle's wheels (if any) into /tmp/site, unpacks its weights, prints the
# versions it runs with, and defines run(). Environment: PYTHON, EXTRA_ARGS (more arguments for every run),
# MIN_LEFT (start no run with fewer seconds left, default 0), SKIP_INSTALL.
set -uo pipefail
BUNDLE=$1 OUT=$2 END=$(($(date +%s) + $3))
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
LOGS=$BUNDLE/logs
mkdir -p "$LOGS" "$OUT"

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

pack_after_tasks() {  # pack_after_tasks "TASK..." LINKED STUDY...: the script's task_runs for every task at once;
    # then OUT/study.tgz: the STUDY folders of BUNDLE/runs (records, logits, validation logits; no weights, too large
    # to bring back) and the logs, without LINKED's teachers and logits (links into this machine's bundle)
    local tasks linked=$2 start
    read -ra tasks <<<"$1"
    shift 2
    start=$(date +%s)
    for task in "${tasks[@]}"; do
        task_runs "$task" &
    done
    wait
    echo "all runs: $(($(date +%s) - start)) s" | tee -a "$OUT/summary.txt"
    nvidia-smi --query-gpu=name,memory.used --format=csv >>"$OUT/summary.txt" 2>&1
    tar czf "$OUT/study.tgz" -C "$BUNDLE/runs" --exclude model.safetensors --exclude "*.bin" --exclude "checkpoint-*" \
        --exclude "tokenizer*" --exclude "cache-*" --exclude "$linked/*/teacher-*" --exclude "$linked/*/logits" \
        $(cd "$BUNDLE/runs" && ls -d "$@" 2>/dev/null) -C .. logs
}
