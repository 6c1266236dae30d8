# Set-up and the two everyday commands. `make demo` and `make test` create the virtual
# environment on first use (a few minutes), then reuse it.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
# litert-torch (PyTorch -> TFLite) cannot share .venv (it downgrades pydantic): its own
# environment next to it, torch pinned to the same version (about 2 minutes, 2 GB, once).
TOOLS := $(VENV)-tools
LITERT_STAMP := $(TOOLS)/litert-torch/.edgefleet-tool-ready

.PHONY: demo test lint clean tools

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[all]'
	touch $(STAMP)

$(LITERT_STAMP): | $(STAMP)
	$(VENV)/bin/edgefleet tools setup litert-torch --constraint constraints.txt

tools: $(LITERT_STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgefleet demo

test: $(STAMP) $(LITERT_STAMP)
	$(VENV)/bin/python -m pytest
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(TOOLS) demo-data
