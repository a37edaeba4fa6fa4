# syntax=docker/dockerfile:1
# Local mode in one image: the API (stemkube-api --local) and the separator it runs in worker
# processes, on the separator's CUDA base. Build from the repository root:
#
#   docker build -f api/local.Dockerfile -t stemkube/local .
#   docker build -f api/local.Dockerfile --build-arg MODELS= --build-arg BASE_IMAGE=debian:bookworm-slim .
#
# docker-compose.yml builds it. The layout follows separator-image/Dockerfile (its comments say
# why: Python from python-build-standalone through uv, torch's own CUDA libraries).

ARG BASE_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.9.5

FROM ${UV_IMAGE} AS uv

FROM ${BASE_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_NO_CACHE=1
RUN uv python install 3.11 && uv venv --python 3.11 /opt/venv
COPY separator-image/pyproject.toml separator-image/README.md /src/separator-image/
COPY separator-image/src /src/separator-image/src
COPY api/pyproject.toml api/README.md /src/api/
COPY api/src /src/api/src
RUN uv pip install --python /opt/venv/bin/python /src/separator-image /src/api

ARG MODELS=htdemucs
ENV HF_HOME=/opt/models/huggingface \
    TORCH_HOME=/opt/models/torch
RUN mkdir -p /opt/models && if [ -n "${MODELS}" ]; then \
      /opt/venv/bin/python -c 'import sys; from demucs.pretrained import get_model; [get_model(n) for n in sys.argv[1:]]' ${MODELS}; \
    fi

FROM ${BASE_IMAGE}
ARG MODELS=htdemucs
LABEL org.opencontainers.image.title="stemkube (local mode)" \
      org.opencontainers.image.description="The stemkube REST API running Demucs separations on this machine" \
      org.opencontainers.image.source="https://github.com/stemkube/stemkube" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/venv /opt/venv
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin stemkube \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=build --chown=10001:10001 /opt/models /opt/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/opt/models/huggingface \
    TORCH_HOME=/opt/models/torch \
    HF_HUB_OFFLINE=${MODELS:+1} \
    STEMKUBE_DATA_DIR=/data
USER 10001:10001
VOLUME /data
EXPOSE 8000
ENTRYPOINT ["stemkube-api", "--local", "--host=0.0.0.0", "--port=8000"]
