# The two commands of the README, and a few more for developers.
#   make serve   install what is missing, build, fetch GPT-2 if absent, serve on :8000
#   make test    install what is missing, build, run the whole test suite
#   make test-container  build the image with podman, run it, test it end to end (needs root)
BUILD ?= build
MODEL ?= models/gpt2
MODEL_NAME ?= gpt2
SERVE_ARGS ?=

.PHONY: all deps build serve test test-slow test-container clean

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

clean:
	rm -rf $(BUILD)
