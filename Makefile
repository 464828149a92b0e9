# The two commands of the README, and a few more for developers.
#   make serve   install what is missing, build, fetch GPT-2 if absent, serve on :8000
#   make test    install what is missing, build, run the whole test suite
#   make test-container  build the image with podman, run it, test it end to end (needs root)
#   make test-fresh  `make test` and `make serve` in a bare Debian 12 container (needs root)
BUILD ?= build
MODEL ?= models/gpt2
MODEL_NAME ?= gpt2
SERVE_ARGS ?=
FUZZ_BUILD ?= build-fuzz
FUZZ_TIME ?= 60
FUZZ_SECONDS ?= $(FUZZ_TIME)
SOAK_SECONDS ?= 600
SOAK_CONCURRENCY ?= 48

.PHONY: all deps build serve test test-slow test-container test-fresh fuzz soak clean

all: build

deps:
	scripts/install-deps

$(BUILD)/build.ninja:
	meson setup $(BUILD) -Dwerror=true

# An existing build folder keeps the options it was set up with: turn warnings-as-errors on
# there too (only when off, since a reconfigure regenerates the build files).
build: deps $(BUILD)/build.ninja
	@[ "$$(meson configure $(BUILD) | awk '$$1 == "werror" {print $$2}')" = true ] || \
	    meson configure $(BUILD) -Dwerror=true
	meson compile -C $(BUILD)

serve: build
	@[ -f $(MODEL)/model.safetensors ] || scripts/download-model $(MODEL_NAME) $(MODEL)
	$(BUILD)/server/nano-vllm serve $(MODEL) $(SERVE_ARGS)

test: build
	meson test -C $(BUILD) --print-errorlogs --no-suite slow

test-slow: build
	meson test -C $(BUILD) --print-errorlogs --suite slow

# The image from the Dockerfile, built and run with rootful podman; then the deploy suite again,
# now with Prometheus installed for its read-back test.
test-container: build
	scripts/install-deps --container
	tests/container/run
	meson test -C $(BUILD) --print-errorlogs --suite deploy

# The README's promise checked for real: in a container made with debootstrap, with only make
# and git added, a clone of this checkout's HEAD (commit first) runs `make test`, which must
# install what it needs and pass with no SKIP but a kernel this CPU lacks, and `make serve`
# (tests/container/fresh). Downloads about 550 MB of packages: not part of make test.
test-fresh:
	scripts/install-deps --container
	tests/container/fresh

# Each libFuzzer harness in tests/fuzz for FUZZ_SECONDS seconds (see tests/fuzz/run-all;
# FUZZERS="api st_header" picks some). New inputs go to $(FUZZ_BUILD)/corpus/NAME; crashes land
# in tests/fuzz/artifacts/ -- copy each into the seed corpus as a regression test.
fuzz: deps
	FUZZERS="$(FUZZERS)" tests/fuzz/run-all $(FUZZ_SECONDS) $(FUZZ_BUILD)

# A bounded mixed load (streams, cancels, long prompts, stop strings, n > 1) on the tiny test
# checkpoint for SOAK_SECONDS: zero 5xx, nothing lost, RSS growth under 1% after warm-up,
# every KV block free at the end (bench/soak.py). Not part of make test.
soak: build
	/usr/bin/python3 bench/soak.py $(BUILD)/server/nano-vllm $(BUILD)/tests/reference/tiny-f32 \
	    --seconds $(SOAK_SECONDS) --concurrency $(SOAK_CONCURRENCY)

clean:
	rm -rf $(BUILD)
