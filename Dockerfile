# nano-vllm-c: an LLM inference server for the OpenAI completions and chat APIs.
#   docker build -t nano-vllm-c .            (podman: podman build --format docker ...)
#   docker run -p 8000:8000 -v models:/models nano-vllm-c
# The model is read from /models/$NANO_VLLM_MODEL (a volume). When the volume does not have
# it, the container downloads it from Hugging Face first. Extra arguments go to
# `nano-vllm serve`, e.g. `docker run ... nano-vllm-c --api-key KEY --max-num-seqs 32`.

# Build stage: the compiler and the -dev packages, thrown away afterwards.
FROM docker.io/library/debian:bookworm-slim AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        gcc libc6-dev meson ninja-build pkg-config python3-minimal \
        libmicrohttpd-dev libjansson-dev libopenblas-dev libuv1-dev libpcre2-dev libxxhash-dev libutf8proc-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Portable code (no -march=native): the hot kernels pick AVX2/AVX-512 at run time, so one image
# runs on every x86-64 machine.
RUN meson setup /build --buildtype=release -Dnative=false \
    && meson compile -C /build nano-vllm \
    && install -D -m 0755 -s /build/server/nano-vllm /out/usr/local/bin/nano-vllm \
    && install -D -m 0755 scripts/download-model /out/usr/local/bin/download-model \
    && install -D -m 0755 deploy/container-entrypoint /out/usr/local/bin/nano-vllm-entrypoint

# Runtime stage: the shared libraries the binary links, curl for the model download and the
# health check, and an unprivileged user.
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libmicrohttpd12 libjansson4 libopenblas0-pthread libuv1 libpcre2-8-0 libxxhash0 libutf8proc2 \
        ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin nano \
    && mkdir -p /models \
    && chown nano:nano /models
COPY --from=build /out/ /
LABEL org.opencontainers.image.title="nano-vllm-c" \
      org.opencontainers.image.description="LLM inference server for the OpenAI completions and chat APIs" \
      org.opencontainers.image.licenses="MIT"

# A fresh named volume takes the ownership of /models from the image, so the server's user
# can download into it.
VOLUME /models
USER 10001:10001
ENV NANO_VLLM_MODEL=gpt2 \
    NANO_VLLM_HOST=0.0.0.0 \
    NANO_VLLM_PORT=8000
EXPOSE 8000
# /health is 200 only when the model is loaded and the server is not draining. The start
# period covers a first start that downloads the model.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${NANO_VLLM_PORT}/health" || exit 1
# The server drains on SIGTERM: it stops accepting, finishes in-flight requests for up to
# --shutdown-timeout (30 s) and exits 0. Give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["nano-vllm-entrypoint"]
