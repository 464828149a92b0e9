# The two commands of the README, and a few more for developers.
#   make serve   install what is missing, build, fetch GPT-2 if absent, serve on :8000
#   make test    install what is missing, build, run the whole test suite
#   make test-container  build the image with podman, run it, test it end to end (needs root)
BUILD ?= build
MODEL ?= models/gpt2
MODEL_NAME ?= gpt2
SERVE_ARGS ?=
FUZZ_BUILD ?= build-fuzz
FUZZ_TIME ?= 60
FUZZERS ?= config tok_encode tok_files st

.PHONY: all deps build serve test test-slow test-container fuzz clean

all: build

deps:
	scripts/install-deps

$(BUILD)/build.ninja:
	meson setup $(BUILD) -Dwerror=true

build: deps $(BUILD)/build.ninja
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

# Each libFuzzer harness in tests/fuzz for FUZZ_TIME seconds. New inputs go to
# $(FUZZ_BUILD)/corpus/NAME (the committed seeds in tests/fuzz/corpus/NAME are only read);
# crashes land in tests/fuzz/artifacts/ -- copy each into the seed corpus as a regression test.
fuzz: deps
	[ -f $(FUZZ_BUILD)/build.ninja ] || CC=clang meson setup $(FUZZ_BUILD) -Dfuzz=true
	meson compile -C $(FUZZ_BUILD)
	mkdir -p tests/fuzz/artifacts
	for f in $(FUZZERS); do \
	    mkdir -p $(FUZZ_BUILD)/corpus/$$f && \
	    $(FUZZ_BUILD)/tests/fuzz/fuzz_$$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 \
	        -artifact_prefix=tests/fuzz/artifacts/$$f- \
	        $(FUZZ_BUILD)/corpus/$$f tests/fuzz/corpus/$$f || exit 1; \
	done

clean:
	rm -rf $(BUILD)
