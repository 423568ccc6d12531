# The two commands of the README: `make run` (install and open the app) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test demo-screenshot clean bundle-check

setup: $(STAMP)

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements-dev.txt -e ".[test]"
	touch $(STAMP)

# `fssgui --check-display`: the system libraries of Qt's window (one line naming what to install)
run: setup
	$(VENV)/bin/fssgui --check-display
	$(VENV)/bin/fssgui

test: setup
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

demo-screenshot: setup
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/fssgui --demo --screenshot demo.png

clean:
	rm -rf $(VENV) build *.egg-info

# Build the Linux bundle (development torch: the CUDA build, which also runs on the CPU), run its
# self-test and the demo screenshot from the frozen app. Slow (tens of minutes): not part of `make test`.
bundle-check:
	packaging/build_linux.sh cuda
	QT_QPA_PLATFORM=offscreen build/bundle-cuda/dist/fssgui-cuda/fssgui --demo --screenshot build/bundle-cuda/demo.png
