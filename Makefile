# Perch: the two commands a new user needs are `make demo` and `make test`; each installs what
# a fresh Debian machine lacks first. `make help` lists the rest.

SHELL := /bin/bash
GO    ?= go
BUILD := build
MODS  := $(BUILD)/modules
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages the build and the tests need.
DEB_PKGS := clang lld wasi-libc libclang-rt-14-dev-wasm32 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user mosquitto chromium

# First-party Go guests: name -> package folder. The manifest sits beside each module's source.
GO_GUESTS :=
# Test-only guests (hostile behaviour for the supervisor's tests).
TEST_GUESTS := hostile:runtime/testdata/hostile
# C guests: name -> folder with wasm/NAME.c. The hot-path modules are in C: a Go guest pays a trip
# to the host at nearly every branch (loop headers; see sdk/c/perch.h), 3 to 5 µs per record.
C_GUESTS := scale:modules/filters/scale bme280:modules/drivers/bme280 window:modules/filters/window threshold:modules/rules/threshold adxl345:modules/drivers/adxl345 gpio:modules/drivers/gpio pms5003:modules/drivers/pms5003 replay:modules/drivers/replay relay:modules/actuators/relay probe:runtime/testdata/probe badcrash:runtime/testdata/bad badhang:runtime/testdata/bad baderror:runtime/testdata/bad

GUEST_GO_FLAGS := -buildmode=c-shared -trimpath
# -mbulk-memory: a memcpy of a variable size is one memory.copy instruction, not wasi-libc's loops.
WASM_CFLAGS    := --target=wasm32-wasi -mexec-model=reactor -O2 -mbulk-memory -std=c11 -Wall -Wextra -Werror -Isdk/c -Wl,--strip-all

# ONNX Runtime: libonnxruntime.so.1 from the npm package onnxruntime-node (the 1.24.x C API that
# yalue/onnxruntime_go v1.27.0 binds), checked against models/ort/ORT_SHA256SUMS.
ORT_VERSION := 1.24.3
ORT_CACHE   := .cache/ort

.PHONY: help deps ort modules build demo-model demo eval skab-example test bench chaos conformance check release release-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: ## install the Debian packages a fresh machine lacks
	@missing=$$(for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

ort: ## fetch libonnxruntime.so.1 (linux x64, arm64) from npm into .cache/ort and check its digest
	@command -v npm >/dev/null || [ -f $(ORT_CACHE)/$(ORT_VERSION)/linux-x64/libonnxruntime.so.1 ] || { \
	  echo "installing: npm"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null; }
	@models/ort/fetch.sh $(ORT_VERSION) $(ORT_CACHE)

modules: deps ## build every first-party Wasm module from source into build/modules
	@mkdir -p $(MODS)
	@set -e; for g in $(GO_GUESTS) $(TEST_GUESTS); do \
	  name=$${g%%:*}; dir=$${g#*:}; \
	  GOOS=wasip1 GOARCH=wasm $(GO) build $(GUEST_GO_FLAGS) -o $(MODS)/$$name.wasm ./$$dir/wasm; \
	  cp $$dir/manifest.yaml $(MODS)/$$name.manifest.yaml; \
	  echo "  $(MODS)/$$name.wasm  $$(stat -c %s $(MODS)/$$name.wasm) bytes"; \
	done
	@set -e; for g in $(C_GUESTS); do \
	  name=$${g%%:*}; dir=$${g#*:}; \
	  clang $(WASM_CFLAGS) -o $(MODS)/$$name.wasm $$dir/wasm/$$name.c; \
	  cp $$dir/manifest.yaml $(MODS)/$$name.manifest.yaml; \
	  echo "  $(MODS)/$$name.wasm  $$(stat -c %s $(MODS)/$$name.wasm) bytes"; \
	done

build: ## build the perch binary (and perch-registry, which `perch registry serve` runs) into build/
	$(GO) build -trimpath -o $(BUILD)/perch ./runtime/cmd/perch
	$(GO) build -trimpath -o $(BUILD)/perch-registry ./runtime/cmd/perch-registry

# The demo's anomaly model: fitted on an hour of the simulated BME280's normal signals (after
# the scripted spike), sampled every 500 ms without waiting (signals are functions of time).
DEMO_MODEL := $(BUILD)/models/env.card.yaml

demo-model: build ## train the demo's anomaly model on the simulator's normal signals
	$(BUILD)/perch model train --sim examples/demo/perch.yaml --device env0 --from 60s --duration 1h \
	  --every 500ms --name env --out $(BUILD)/models

demo: modules build ort demo-model ## run the demo pipeline on a simulated BME280 for a minute, then print the recorder
	@mkdir -p var
	$(BUILD)/perch run --config examples/demo/perch.yaml --for $${DEMO_FOR:-60s}
	$(BUILD)/perch db --db var/perch.db

# The labelled datasets (NAB, SKAB) with their published baselines; SKAB is GPL-3.0: it is read in
# place, never copied into anything we build.
DATASETS ?= ../shared/datasets

eval: modules build ort ## evaluate the default anomaly recipes on SKAB and NAB (DATASETS=dir), fp32 and int8, through the runtime
	@set -e; for p in fp32 int8; do \
	  $(BUILD)/perch model eval --protocol skab --data $(DATASETS)/skab/data --precision $$p --json; \
	  $(BUILD)/perch model eval --protocol nab --data $(DATASETS)/nab --precision $$p --json; \
	done

skab-example: modules build ort ## replay a SKAB pump experiment through an anomaly model (DATASETS=dir); see examples/skab
	@test -f $(DATASETS)/skab/data/valve1/0.csv || { echo "no SKAB data under $(DATASETS): set DATASETS"; exit 1; }
	$(BUILD)/perch model train --csv $(DATASETS)/skab/data/valve1/0.csv --format skab --rows 400 --name skab --out $(BUILD)/models
	@mkdir -p var && rm -f var/skab.db
	$(BUILD)/perch run --config examples/skab/perch.yaml --for $${SKAB_FOR:-5s} --quiet
	$(BUILD)/perch status --db var/skab.db

test: modules ort demo-model ## run every test, integration tests included
	$(GO) test -count=1 ./...

bench: modules ort demo-model ## run the Go benchmarks (compare runs with benchstat)
	$(GO) test -run '^$$' -bench . -benchmem -count $${COUNT:-1} ./runtime/... ./modules/... ./sdk/... ./models/...

# ~40 s here (2 cores): a 20 s broker outage, then 50 kills during the drain. By hand, make it
# longer: make chaos CHAOS_ROUNDS=200 CHAOS_OUTAGE=5m
chaos: deps ## uplink chaos drill: broker down while alerts come, kill -9 during the drain
	PERCH_CHAOS_ROUNDS=$(or $(CHAOS_ROUNDS),50) PERCH_CHAOS_OUTAGE=$(or $(CHAOS_OUTAGE),20s) \
	  $(GO) test -count=1 -run '^TestIntegrationChaos$$' -v -timeout 20m ./runtime/uplink/

# The OCI distribution-spec conformance runner and the oras CLI, pinned, installed into .cache/bin
# (outside our go.mod). registry/CONFORMANCE.md has the result and what is switched off.
CONFORMANCE_VERSION := v0.0.0-20260831232431-97274622c111
ORAS_VERSION        := v1.3.6
TOOLS               := .cache/bin

conformance: modules build ## OCI conformance suite and an oras push/pull against perch registry serve
	@$(GO) version -m $(TOOLS)/conformance 2>/dev/null | grep -q '$(CONFORMANCE_VERSION)' || \
	  GOBIN=$(CURDIR)/$(TOOLS) $(GO) install github.com/opencontainers/distribution-spec/conformance@$(CONFORMANCE_VERSION)
	@$(GO) version -m $(TOOLS)/oras 2>/dev/null | grep -q 'oras.land/oras[[:space:]]*$(ORAS_VERSION)' || \
	  GOBIN=$(CURDIR)/$(TOOLS) $(GO) install oras.land/oras/cmd/oras@$(ORAS_VERSION)
	registry/conformance.sh $(BUILD)/perch $(TOOLS)/conformance $(TOOLS)/oras $(MODS)/threshold.wasm $(BUILD)/conformance

# Guest-side Go (module logic, test guests) must build for wasip1; its tests run on the host.
check: modules ## gofmt, vet, go mod tidy, cross-builds (linux/arm64 with cgo, wasip1 guests)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./sdk/abi/... ./sdk/go/...
	GOOS=wasip1 GOARCH=wasm $(GO) build ./modules/... ./runtime/testdata/hostile/...
	$(GO) mod tidy && git diff --exit-code go.mod go.sum
	CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=aarch64-linux-gnu-gcc $(GO) build -trimpath -o $(BUILD)/perch-linux-arm64 ./runtime/cmd/perch
	@echo "check: ok"

# Releases: VERSION names the tarballs and is the binaries' main.Version; they ship every
# first-party module but the tests' (those under testdata/).
VERSION         ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
RELEASE         := $(BUILD)/release
RELEASE_MODULES := $(foreach g,$(GO_GUESTS) $(C_GUESTS),$(if $(findstring /testdata,$(g)),,$(firstword $(subst :, ,$(g)))))

release: modules ort demo-model ## build/release/perch-VERSION-linux-{amd64,arm64}.tar.gz, reproducibly (VERSION=...)
	GO=$(GO) MODS=$(MODS) MODULES="$(RELEASE_MODULES)" MODELS=$(BUILD)/models ORT_LIB_DIR=$(ORT_CACHE)/$(ORT_VERSION) \
	  runtime/cmd/perch/release/release.sh $(VERSION) $(RELEASE)

# Under qemu-aarch64: 30 to 80 s here after the release is built (2 loaded cores), 5 to 20 s of
# it building the models/ort tests for arm64. RELEASE_CHECK_CONFIG=FILE also runs that config (a
# model pipeline), RELEASE_CHECK_EXPECT=REGEXP is what its output or `perch db` must show.
release-check: release ## run the arm64 release under qemu: version, validate, a demo run, inference
	GO=$(GO) RELEASE_CHECK_CONFIG="$(RELEASE_CHECK_CONFIG)" RELEASE_CHECK_EXPECT="$(RELEASE_CHECK_EXPECT)" \
	  runtime/cmd/perch/release/check.sh $(RELEASE)/perch-$(VERSION)-linux-arm64.tar.gz

clean: ## remove build output and the demo database
	rm -rf $(BUILD) var
