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
# Environment: WORKERS (runs at a time, default 8: a 3-layer student leaves a GPU mostly idle), and those of
# setup_run.sh (PYTHON, EXTRA_ARGS, MIN_LEFT).
source "$(dirname "$0")/setup_run.sh"
shift 3
RUNS=$BUNDLE/runs
SIX_LAYER=(--student_layers 0,1,2,3,4,5 --study_dir "$RUNS/v3-6layer" --teachers_from "$RUNS/v3")

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

pack_after_tasks "$*" v3-6layer v3 v3-6layer
