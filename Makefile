# edged: `make run` sets up everything and runs the daemon; `make test` runs the test suite.
# Both install what they need (system packages when allowed, a virtualenv, the default model).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
EDGED  := $(VENV)/bin/edged
CONFIG ?= configs/edged.toml

.PHONY: run test deps dev-deps model broker stop-broker lint typecheck check bench clean install uninstall llama-gpu

run: deps model broker
	@echo ""
	@echo "edged is starting. In another terminal, ask it something:"
	@echo "    $(EDGED) ask --config $(CONFIG) \"What is the capital of France?\""
	@echo "or, from any MQTT client: mosquitto_sub -t 'edged/+/response/#' -v &"
	@echo "    mosquitto_pub -t edged/$$(hostname)/request -q 1 -m '{\"prompt\":\"Hello\"}'"
	@echo "Stop with Ctrl-C."
	@echo ""
	exec $(EDGED) run --config $(CONFIG)

# The suite waits on brokers, daemons and models far more than it computes, so it runs in
# TEST_WORKERS processes (pytest-xdist), a test file to each at a time (a file's tests share
# its daemons and brokers); TEST_WORKERS=0 runs it in one process. docs/testing.md.
TEST_WORKERS ?= 3

# The second local model (issue 16's tests of several local models and residency).
TEST_MODELS := gemma3-270m

test: dev-deps model
	$(EDGED) models fetch $(TEST_MODELS) --config $(CONFIG)
	scripts/bootstrap.sh mosquitto
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

deps: $(VENV)/.stamp-base
dev-deps: $(VENV)/.stamp-dev

$(VENV)/.stamp-base: pyproject.toml scripts/bootstrap.sh scripts/llama-cmake-args.sh
	PYTHON=$(PYTHON) scripts/bootstrap.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@echo "installing edged and llama-cpp-python (the first build takes a few minutes; pip caches it)"
	@# On a Jetson with the CUDA toolkit, llama-cpp-python is built with CUDA
	@# (scripts/llama-cmake-args.sh; CMAKE_ARGS from the environment wins); a CPU wheel in
	@# pip's cache must not stand in for it, hence --no-cache-dir then.
	args="$${CMAKE_ARGS-$$(scripts/llama-cmake-args.sh)}"; \
	CMAKE_ARGS="$$args" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -q \
		--disable-pip-version-check $${args:+--no-cache-dir} -e .
	touch $@

# Rebuild llama-cpp-python for this machine's GPU (the command `edged doctor` prints):
# `make llama-gpu` on a Jetson, or CMAKE_ARGS="-DGGML_VULKAN=on" make llama-gpu elsewhere.
llama-gpu: deps
	args="$${CMAKE_ARGS-$$(scripts/llama-cmake-args.sh)}"; \
	if [ -z "$$args" ]; then echo "no GPU toolchain found; set CMAKE_ARGS (docs/boards.md)" >&2; exit 1; fi; \
	CMAKE_ARGS="$$args" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install \
		--disable-pip-version-check --force-reinstall --no-cache-dir --no-deps \
		"llama-cpp-python==$$($(PY) -c 'import llama_cpp; print(llama_cpp.__version__)')"

$(VENV)/.stamp-dev: $(VENV)/.stamp-base
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

# The configured local model, then the text-embedding model and its tokenizer
# (edged.embeddings). A file already present with the right sha256 is not fetched again.
EMBEDDING_MODELS := minilm-l6-v2-int8 minilm-l6-v2-tokenizer

model: deps
	$(EDGED) models fetch --config $(CONFIG)
	$(EDGED) models fetch $(EMBEDDING_MODELS) --config $(CONFIG)

broker:
	scripts/ensure-broker.sh

stop-broker:
	@if [ -f .run/mosquitto/mosquitto.pid ]; then kill $$(cat .run/mosquitto/mosquitto.pid) && echo "stopped Mosquitto"; else echo "no broker started by make"; fi

lint: dev-deps
	$(VENV)/bin/ruff check edged tests bench examples
	$(VENV)/bin/ruff format --check edged tests bench examples

typecheck: dev-deps
	$(VENV)/bin/mypy --python-version 3.10

check: lint typecheck test

bench: dev-deps model
	scripts/bootstrap.sh mosquitto
	$(PY) bench/overhead.py

# The systemd service (docs/service.md). As root: `sudo make install`. DESTDIR stages the
# files under another root (no venv there: a venv is tied to its path).
DESTDIR ?=
SERVICE_PYTHON ?= /usr/bin/python3

install: deps model
	CMAKE_ARGS="$${CMAKE_ARGS-$$(scripts/llama-cmake-args.sh)}" \
		$(PY) -m edged.service.install --prefix "$(or $(DESTDIR),/)" --source-dir . \
		$(if $(DESTDIR),,--venv --python $(SERVICE_PYTHON))

# Removes the unit only: /etc/edged (config, credentials), /opt/edged (venv, models) and
# /var/lib/edged (spool, energy counter) stay.
uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl disable --now edged.service || true; fi
	rm -f "$(DESTDIR)/etc/systemd/system/edged.service"
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "kept /etc/edged, /opt/edged and /var/lib/edged (rm -rf them to remove everything)"

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache *.egg-info
