# appforge: one image for every role of docs/deploy.md (API, worker, builder, Chroma).
#
#   docker build -t appforge .
#   docker run -p 8000:8000 -e APPFORGE_ADMIN_TOKEN=... -v appforge:/data appforge   # embedded
#   docker compose up                                             # scale-out: docker-compose.yml
#
# The build compiles llama-cpp-python (the bundled local model) for AVX2, as the README's
# install does, not for the build machine's CPU. To keep torch's CUDA libraries
# out of the image, pass a CPU-only wheel index for torch:
#   docker build --build-arg PIP_EXTRA_INDEX_URL=<cpu torch index> -t appforge .

FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY appforge ./appforge
COPY api ./api
COPY apps_yaml ./apps_yaml
COPY builder ./builder
COPY datasources ./datasources
COPY evals ./evals
COPY prompts ./prompts
COPY providers ./providers
COPY runs ./runs
RUN python -m venv /opt/appforge && /opt/appforge/bin/pip install . -c constraints.txt

FROM python:3.11-slim-bookworm
# libgomp1: llama.cpp's OpenMP threads.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /data appforge \
    && mkdir -p /data /chroma \
    && chown appforge:appforge /data /chroma
COPY --from=build /opt/appforge /opt/appforge
ENV PATH=/opt/appforge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    APPFORGE_HOME=/data \
    ANONYMIZED_TELEMETRY=False \
    HF_HUB_OFFLINE=1
USER appforge
WORKDIR /data
EXPOSE 8000 8501
# No HEALTHCHECK here: the image also runs workers (no HTTP) and Chroma; each service of
# docker-compose.yml says how it is probed.
ENTRYPOINT ["appforge"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--no-ui"]
