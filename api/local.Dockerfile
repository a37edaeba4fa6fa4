# Local mode in one image: the API (stemkube-api --local) and the separator it runs in worker
# processes, on the separator's CUDA base. Build from the repository root:
#
#   docker build -f api/local.Dockerfile -t stemkube/local .
#   docker build -f api/local.Dockerfile --build-arg MODELS= \
#     --build-arg BASE_IMAGE=stemkube/python-base:3.11-bookworm --build-arg PYTHON=base .
#
# docker-compose.yml builds it. The layout follows separator-image/Dockerfile, whose comments
# say why: Python 3.11 from python-build-standalone (PYTHON=standalone, the default) or from the
# base image (PYTHON=base), torch's own CUDA libraries, one stage.

ARG BASE_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04
FROM ${BASE_IMAGE}
ARG PYTHON=standalone
ARG UV_VERSION=0.9.5
LABEL org.opencontainers.image.title="stemkube (local mode)" \
      org.opencontainers.image.description="The stemkube REST API running Demucs separations on this machine" \
      org.opencontainers.image.source="https://github.com/stemkube/stemkube" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY separator-image/python-venv.sh /tmp/python-venv.sh
RUN sh /tmp/python-venv.sh && rm /tmp/python-venv.sh \
    && mkdir -p /data && chown 10001:10001 /data
COPY contract/pyproject.toml contract/README.md /src/contract/
COPY contract/src /src/contract/src
COPY separator-image/pyproject.toml separator-image/README.md /src/separator-image/
COPY separator-image/src /src/separator-image/src
COPY api/pyproject.toml api/README.md /src/api/
COPY api/src /src/api/src
# stemkube-contract==0.1.0 is the local contract/ (on no index): installed in the same command.
# triton (about 1 GB) serves only torch.compile's generated kernels; Demucs runs eagerly.
RUN /opt/venv/bin/python -m pip install --no-cache-dir /src/contract /src/separator-image /src/api \
 && /opt/venv/bin/python -m pip uninstall --yes triton \
 && rm -rf /src

# The weights local mode separates with, baked in (build-time network); MODELS= leaves them
# to the first separation (HF_HOME) or to a mounted cache.
ARG MODELS=htdemucs
ENV HF_HOME=/opt/models/huggingface \
    TORCH_HOME=/opt/models/torch
RUN mkdir -p /opt/models && if [ -n "${MODELS}" ]; then \
      /opt/venv/bin/python -c 'import sys; from demucs.pretrained import get_model; [get_model(n) for n in sys.argv[1:]]' ${MODELS}; \
    fi && chown -R 10001:10001 /opt/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=${MODELS:+1} \
    STEMKUBE_DATA_DIR=/data
USER 10001:10001
VOLUME /data
EXPOSE 8000
ENTRYPOINT ["stemkube-api", "--local", "--host=0.0.0.0", "--port=8000"]
