# make test   : set up .venv if needed, run the test suite (Triton interpreter on CPU, real GPU if present)
# make bench  : set up .venv if needed, run the perf harness and the whole-model benchmark
#               (GPU timing, or the no-GPU report and the models' CPU code-path run), then check
#               the open issues' targets against the GPU's results (perf/targets.py)
# make report : static kernel report only (AOT compile for sm_80/sm_90, read with cuobjdump)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.elutriton-installed
PYTEST_WORKERS ?= 2

.PHONY: test bench report env clean

env: $(STAMP)

$(STAMP): pyproject.toml tools/setup_env.sh
	bash tools/setup_env.sh $(VENV)
	touch $@

test: $(STAMP)
	TRITON_INTERPRET=1 $(PY) -m pytest -q -p no:benchmark --durations=10 -n $(PYTEST_WORKERS) tests

bench: $(STAMP)
	$(PY) -m perf.bench $(BENCH_ARGS)
	$(PY) -m perf.models $(MODELS_ARGS)
	$(PY) -m perf.saved_memory
	$(PY) -m perf.targets

report: $(STAMP)
	$(PY) -m perf.kernel_report

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
