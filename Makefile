# Two commands for a newcomer: `make demo` and `make test`. Both install first (idempotent).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LAKEHOUSE ?= .lakehouse
SCHEMA    ?= contoso

.PHONY: install demo test test-fast test-unit runtimes bench clean check-java browser

check-java:
	@command -v java >/dev/null 2>&1 || { echo "ERROR: Java 17+ is required by Spark 4 and was not found on PATH. Install a JDK 17 or newer (e.g. apt-get install openjdk-17-jdk-headless) and retry."; exit 1; }
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	  if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then echo "ERROR: Java 17+ is required by Spark 4; found '$$(java -version 2>&1 | head -1)'."; exit 1; fi

# Reinstall only when the package definition changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'  # the local extra: pyspark, delta-spark, papermill, ...
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: check-java $(STAMP)

demo: install
	$(BIN)/seglib demo --lakehouse $(LAKEHOUSE) --schema $(SCHEMA)

# The headless browser the report test opens report.html in (tests/e2e/report_browser.py): Debian's chromium
# and its driver, installed once (apt-get, as root or with sudo). Without apt-get a local run goes on and the
# report test skips; on CI (CI=true) the missing browser stops the target, and the test fails.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; \
	elif [ -n "$$CI" ]; then echo "ERROR: chromium and chromedriver are needed by the report test and apt-get is missing"; exit 1; \
	else echo "WARNING: no chromium/chromedriver and no apt-get: the report's browser test will skip"; fi

# The runtime matrix: one venv per runtime in runtimes/ (the platform's Spark, Delta and libraries); the
# tests install the seglib wheel on top, with its dependencies, as a cluster library or Fabric Environment does.
RUNTIMES    := $(basename $(notdir $(wildcard runtimes/*.txt)))
RUNTIME_DIR := .runtimes

$(RUNTIME_DIR)/%/.installed: runtimes/%.txt
	rm -rf $(RUNTIME_DIR)/$*
	$(PYTHON) -m venv $(RUNTIME_DIR)/$*
	$(RUNTIME_DIR)/$*/bin/pip install --quiet --upgrade pip
	$(RUNTIME_DIR)/$*/bin/pip install --quiet -r runtimes/$*.txt
	$(RUNTIME_DIR)/$*/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

runtimes: $(RUNTIMES:%=$(RUNTIME_DIR)/%/.installed)

# Everything, the runtime matrix included (about 40 min of tests on 2 cores; the rows build beside the rest).
test: install runtimes browser
	$(BIN)/seglib validate --runtime $(RUNTIME_DIR)/spark35
	$(BIN)/python -m pytest

# Seconds: the tests that start no JVM (parameters, notebooks as files, the bundle, the runner, maths).
test-unit: install
	$(BIN)/python -m pytest tests/unit

# The edit loop: no runtime matrix, no wheel install.
test-fast: install browser
	$(BIN)/seglib validate --skip-wheel
	$(BIN)/python -m pytest -m "not matrix"

# Not part of `make test`: 62,988 and 1,000,000 members (BENCH_ARGS=--large adds 10,000,000); results in bench/.
bench: install
	$(BIN)/seglib bench $(BENCH_ARGS)

# A run keeps its Spark server for the next run (SEGLIB_SERVER_IDLE minutes, default 15): stop it first.
clean:
	-@[ -x $(BIN)/seglib ] && $(BIN)/seglib server stop --lakehouse $(LAKEHOUSE)
	rm -rf $(LAKEHOUSE) runs bench spark-warehouse metastore_db derby.log
