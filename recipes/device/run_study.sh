#!/usr/bin/env bash
# Study v2's tasks on a GPU machine, from a bundle of recipes/device/bundle_study.py:
#   bash recipes/device/run_study.sh BUNDLE OUT SECONDS TASK...
# Environment: EXTRA_ARGS (more arguments for every run), WORKERS (student runs at a time, default 6: a 3-layer
# student leaves a GPU mostly idle), MIN_LEFT (start no run with fewer seconds left, default 0: a run stopped at
# the deadline is lost, so a run that cannot finish only slows the others), STUDENTS_ONLY=1 (no grids, no
# temperature per method, no low-resource regime).
# The machine needs python3 with torch; the bundle's wheels/ (if any) are installed into /tmp/site first. Per task,
# in parallel: the teachers and logits where the bundle has none (compare.py, seed 42, 'none'), then every
# method x seed as a queue of compare.py runs, WORKERS at a time ('single' first: it is one run per teacher), for
# mrpc and sst2 the T x alpha grids of `make study-v2`, for mrpc temperature per method, for sst2 the low-resource
# regime (its config's methods x seeds, a second queue). Everything stops SECONDS after the script starts (leave a
# minute for the tars within the call's limit); finished runs are reused, also those whose records the bundle
# carries. OUT gets summary.txt and study.tgz: the records, logits and validation logits (no weights: too large to
# bring back) and the logs.
source "$(dirname "$0")/setup_run.sh"
shift 3
STUDY=$BUNDLE/runs/v2
METHODS=(single none average weighted min_entropy gating confidence fitted average+calibrated average_to_confidence)

queue() {  # queue NAME CSV_PREFIX "METHOD..." COMMAND...: each method x seed one run of COMMAND, WORKERS at a time
    local name=$1 csv=$2 methods
    read -ra methods <<<"$3"
    shift 3
    (  # a subshell, so that `jobs` counts this queue's runs only
        for method in "${methods[@]}"; do
            for seed in 42 43 44; do
                while [ "$(jobs -rp | wc -l)" -ge "${WORKERS:-6}" ]; do wait -n; done
                if [ $((END - $(date +%s))) -le "${MIN_LEFT:-0}" ]; then
                    echo "$name: queue stopped at $method, seed $seed (deadline)" | tee -a "$OUT/summary.txt"
                    break 2
                fi
                run "$name-$seed-$method" "$@" --methods "$method" --seeds "$seed" \
                    --results_csv "$csv-$seed-$method.csv" &
                sleep 2  # the first run writes the tokenization caches the others then read
            done
        done
        wait
    )
}

task_runs() {
    local task=$1 grid=(--config recipes/configs/v2_grid.yaml --task "$1" --logit_dataset "$STUDY/$1/logits")
    local compare=($PYTHON recipes/compare.py --config "recipes/configs/v2_$task.yaml" --study_dir "$STUDY"
        --data "$BUNDLE/data/glue")
    if [ ! -f "$STUDY/$task/logits/dataset_dict.json" ]; then
        run "$task-teachers" "${compare[@]}" --methods none --seeds 42 --results_csv "$STUDY/$task-teachers.csv"
    fi
    [ -f "$STUDY/$task/logits/dataset_dict.json" ] || return
    queue "$task" "$STUDY/$task" "${METHODS[*]}" "${compare[@]}" &
    [ -n "${STUDENTS_ONLY:-}" ] && { wait; return; }
    [ "$task" = sst2 ] && grid+=(--max_length 64)
    if [ "$task" = mrpc ] || [ "$task" = sst2 ]; then
        grid+=(--data "$BUNDLE/data/glue")
        run "$task-sweep-single" $PYTHON recipes/sweep.py "${grid[@]}" --fusion single --teacher_index 0 \
            --output_dir "$STUDY/$task/sweep-single-mpnet" &
        run "$task-sweep-average" $PYTHON recipes/sweep.py "${grid[@]}" --fusion average \
            --output_dir "$STUDY/$task/sweep-average" &
    fi
    if [ "$task" = sst2 ]; then  # the low-resource regime, on these teachers' logits (linked, not copied)
        local config=recipes/configs/v2_sst2_low_resource.yaml
        local methods=$(sed -n 's/^methods: *\([^ #]*\).*/\1/p' $config | tr , ' ')
        queue sst2-low-resource "$BUNDLE/runs/v2-low-resource/sst2" "$methods" $PYTHON recipes/compare.py \
            --config $config --study_dir "$BUNDLE/runs/v2-low-resource" --teachers_from "$STUDY" \
            --data "$BUNDLE/data/glue" &
    fi
    if [ "$task" = mrpc ]; then
        run mrpc-sweep-temperature $PYTHON recipes/sweep.py "${grid[@]}" --methods average,gating,confidence,fitted \
            --temperatures 3,6,9 --alphas 0.7 --output_dir "$STUDY/mrpc/sweep-temperature-per-method" &
    fi
    wait
}

pack_after_tasks "$*" v2-low-resource v2 v2-low-resource
