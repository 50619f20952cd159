# From Bag-of-Words to Strawberry. Quick start: `make lab` (JupyterLab) and `make test`.
# Without conda: a virtual environment in $(VENV), built from environment.yml's pip list when missing.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready
NOTEBOOKS ?=

.PHONY: setup lab artifacts test test-ipywidgets7 test-browser course bench clean-cache

setup: $(READY)

$(READY): environment.yml
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; assert (3, 11) <= v <= (3, 13), \
		f"the course needs Python 3.11 to 3.13; $(PYTHON) is {v[0]}.{v[1]} (try: make PYTHON=python3.12 ...)"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	awk '/^  - pip:/{p=1;next} p&&/^ +- /{sub(/^ +- /,"");print}' environment.yml > $(VENV)/requirements.txt
	@echo "Installing the course's packages (llama-cpp-python compiles from source: about 5 minutes)..."
	$(BIN)/python -m pip install --requirement $(VENV)/requirements.txt
	@# JupyterLab 4.6 sends widget messages over kernel subshells, on another thread than the cell's: matplotlib
	@# then draws blank or half-drawn charts when two controls move at once (make test-browser shows it). Off here.
	mkdir -p $(VENV)/share/jupyter/lab/settings
	echo '{"@jupyterlab/apputils-extension:kernels-settings": {"commsOverSubshells": "disabled"}}' \
		> $(VENV)/share/jupyter/lab/settings/overrides.json
	touch $(READY)

# (--allow-root only where you are root, as in a container: JupyterLab refuses to start otherwise.)
lab: setup
	cd notebooks && $(abspath $(BIN))/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root)

# Unit tests, then every notebook alone in a fresh kernel in fast mode.
test: setup
	$(BIN)/python -m pytest tests

# The widget helpers again under ipywidgets 7.7.1, the version Colab ships: a small environment layered on .venv.
W7 := .cache/ipywidgets7
test-ipywidgets7: setup
	test -x $(W7)/bin/python || $(BIN)/python -m venv --without-pip $(W7)
	$(BIN)/python -c 'import site; print(site.getsitepackages()[0])' > \
		$$($(W7)/bin/python -c 'import site; print(site.getsitepackages()[0])')/course-venv.pth
	$(BIN)/python -m pip install --quiet --target $$($(W7)/bin/python -c 'import site; print(site.getsitepackages()[0])') \
		ipywidgets==7.7.1 widgetsnbextension==3.6.10 jupyterlab_widgets==1.1.11
	$(W7)/bin/python -c 'import ipywidgets; assert ipywidgets.__version__ == "7.7.1", ipywidgets.__version__'
	$(W7)/bin/python -m pytest -p no:cacheprovider tests/unit/test_widgets.py

# The widgets in a real browser: JupyterLab in headless Chromium runs a notebook and drives its widgets
# (tests/browser). Debian's chromium and chromium-driver are installed with apt-get when missing.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
test-browser: setup
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo "Installing Debian's chromium and chromium-driver (apt-get)..."; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver >/dev/null; \
	fi
	$(BIN)/python -m pytest -m browser tests/browser

# Every trained model of the course, built once ahead of a class (one line per artifact); notebooks then load them.
artifacts: setup
	LLMLAB_MODE=$${LLMLAB_MODE:-full} $(BIN)/python tools/build_artifacts.py

# Every notebook in full mode, outputs saved into the notebooks (NOTEBOOKS="04 05" for some).
course: setup
	$(BIN)/python tools/run_notebooks.py course $(NOTEBOOKS)

# Full-mode wall time, peak memory and key figures per notebook (each from an empty artifact cache, as in a
# fresh clone), then the benchmarks: the nanoGPT CPU recipe, KV cache and llama.cpp speed. All into
# bench/results.json. BENCH_FLAGS=--save-outputs also writes the outputs into the notebooks, as `make course`.
bench: setup
	$(BIN)/python tools/run_notebooks.py bench $(BENCH_FLAGS) $(NOTEBOOKS)
	$(BIN)/python bench/shakespeare_char.py
	$(BIN)/python bench/inference.py

clean-cache:
	rm -rf .cache/llmlab
