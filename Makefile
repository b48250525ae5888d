# The two commands of the README:  make demo  and  make test.  Both set up what they need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Models load from installed packages only; nothing is fetched from a hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test bench lint clean system-deps

$(STAMP): pyproject.toml integrations/langchain/pyproject.toml integrations/llama_index/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned: sentence-transformers then finds it and never pulls a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[all,test]' -e integrations/langchain -e integrations/llama_index
	touch $(STAMP)

system-deps:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q redis-server; }
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

demo: $(STAMP)
	$(VENV)/bin/rag-cache demo

test: $(STAMP) system-deps
	$(PY) -m pytest -n 2 --dist loadfile -q

bench: $(STAMP) system-deps
	$(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(PY) -m ruff check rag_cache_plugin integrations benchmarks tests
	$(PY) -m mypy rag_cache_plugin integrations/langchain/langchain_rag_cache integrations/llama_index/llama_index_rag_cache

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
