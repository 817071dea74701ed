# Perch: the two commands a new user needs are `make demo` and `make test`; each installs what
# a fresh Debian machine lacks first. `make help` lists the rest.

SHELL := /bin/bash
GO    ?= go
BUILD := build
MODS  := $(BUILD)/modules
SUDO  := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Debian packages the build and the tests need.
DEB_PKGS := clang lld wasi-libc libclang-rt-14-dev-wasm32 gcc-aarch64-linux-gnu libc6-dev-arm64-cross mosquitto

# First-party Go guests: name -> package folder. The manifest sits beside each module's source.
GO_GUESTS :=
# Test-only guests (hostile behaviour for the supervisor's tests).
TEST_GUESTS := hostile:runtime/testdata/hostile
# C guests: name -> folder with wasm/NAME.c. The hot-path modules are in C: a Go guest pays a trip
# to the host at nearly every branch (loop headers; see sdk/c/perch.h), 3 to 5 µs per record.
C_GUESTS := scale:modules/filters/scale bme280:modules/drivers/bme280 window:modules/filters/window threshold:modules/rules/threshold adxl345:modules/drivers/adxl345 gpio:modules/drivers/gpio pms5003:modules/drivers/pms5003 replay:modules/drivers/replay relay:modules/actuators/relay probe:runtime/testdata/probe

GUEST_GO_FLAGS := -buildmode=c-shared -trimpath
# -mbulk-memory: a memcpy of a variable size is one memory.copy instruction, not wasi-libc's loops.
WASM_CFLAGS    := --target=wasm32-wasi -mexec-model=reactor -O2 -mbulk-memory -std=c11 -Wall -Wextra -Werror -Isdk/c -Wl,--strip-all

# ONNX Runtime: libonnxruntime.so.1 from the npm package onnxruntime-node (the 1.24.x C API that
# yalue/onnxruntime_go v1.27.0 binds), checked against models/ort/ORT_SHA256SUMS.
ORT_VERSION := 1.24.3
ORT_CACHE   := .cache/ort

.PHONY: help deps ort modules build demo test bench chaos check clean

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

build: ## build the perch binary into build/perch
	$(GO) build -trimpath -o $(BUILD)/perch ./runtime/cmd/perch

demo: modules build ## run the demo pipeline on a simulated BME280 for a minute, then print the recorder
	@mkdir -p var
	$(BUILD)/perch run --config examples/demo/perch.yaml --for $${DEMO_FOR:-60s}
	$(BUILD)/perch db --db var/perch.db

test: modules ort ## run every test, integration tests included
	$(GO) test -count=1 ./...

bench: modules ort ## run the Go benchmarks (compare runs with benchstat)
	$(GO) test -run '^$$' -bench . -benchmem -count $${COUNT:-1} ./runtime/... ./modules/... ./sdk/... ./models/...

# ~40 s here (2 cores): a 20 s broker outage, then 50 kills during the drain. By hand, make it
# longer: make chaos CHAOS_ROUNDS=200 CHAOS_OUTAGE=5m
chaos: deps ## uplink chaos drill: broker down while alerts come, kill -9 during the drain
	PERCH_CHAOS_ROUNDS=$(or $(CHAOS_ROUNDS),50) PERCH_CHAOS_OUTAGE=$(or $(CHAOS_OUTAGE),20s) \
	  $(GO) test -count=1 -run '^TestIntegrationChaos$$' -v -timeout 20m ./runtime/uplink/

check: modules ## gofmt, vet, go mod tidy, cross-builds (linux/arm64 with cgo, wasip1 guests)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./sdk/... ./modules/...
	$(GO) mod tidy && git diff --exit-code go.mod go.sum
	CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=aarch64-linux-gnu-gcc $(GO) build -trimpath -o $(BUILD)/perch-linux-arm64 ./runtime/cmd/perch
	@echo "check: ok"

clean: ## remove build output and the demo database
	rm -rf $(BUILD) var
