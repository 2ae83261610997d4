# Two commands do everything on a fresh machine:
#   make run    build the environment, then run every notebook on the embedded dataset
#   make test   build the environment, then run the test suite (CI calls this)
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PROFILE ?= default
ARGS    ?=

.PHONY: install run smoke test lab benchmark clean-reports

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --no-deps --no-build-isolation -e . || $(BIN)/python -m pip install --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name fakedet --display-name "Python (fakedet lab)"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python run_all.py --profile $(PROFILE) $(ARGS)

smoke: install
	$(BIN)/python run_all.py --profile smoke $(ARGS)

test: install
	$(BIN)/python -m pytest $(ARGS)

lab: install
	$(BIN)/jupyter lab notebooks

benchmark: install
	$(BIN)/python benchmarks/bench_pipeline.py $(ARGS)

clean-reports:
	rm -rf reports/smoke reports/default reports/full
