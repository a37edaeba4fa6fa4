# Local mode in one image: the API (stemkube-api --local) and the separator it runs in worker
# processes, on the separator's CUDA base. Build from the repository root:
#
#   docker build -f api/local.Dockerfile -t stemkube/local .
#   docker build -f api/local.Dockerfile --build-arg MODELS= \
#     --build-arg BASE_IMAGE=stemkube/python-base:3.11-bookworm --build-arg PYTHON=base .
#
# docker-compose.yml builds and runs it. The layout follows separator-image/Dockerfile, whose
# comments say why: Python 3.11 from python-build-standalone (PYTHON=standalone, the default) or
# from the base image (PYTHON=base), torch's own CUDA libraries, one stage.
#
# Everything up to the separator's `pip install` is separator-image/Dockerfile's instructions
# word for word, its label included (the last LABEL below replaces it): Docker's build cache
# then shares those layers, torch's 4 GB among them, with a separator image built from the same
# tree, base and PYTHON, and this image adds only the API on top. Keep the two in step.

ARG BASE_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04
FROM ${BASE_IMAGE}
ARG PYTHON=standalone
ARG UV_VERSION=0.9.5
LABEL org.opencontainers.image.title="stemkube-separator" \
      org.opencontainers.image.description="stemkube-separate: a song in, Demucs stems out as a ZIP" \
      org.opencontainers.image.source="https://github.com/stemkube/stemkube" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY separator-image/python-venv.sh /tmp/python-venv.sh
RUN sh /tmp/python-venv.sh && rm /tmp/python-venv.sh
COPY contract/pyproject.toml contract/README.md /src/contract/
COPY contract/src /src/contract/src
COPY separator-image/pyproject.toml separator-image/README.md /src/separator-image/
COPY separator-image/src /src/separator-image/src
RUN /opt/venv/bin/python -m pip install --no-cache-dir /src/contract /src/separator-image \
 && /opt/venv/bin/python -m pip uninstall --yes triton \
 && rm -rf /src
# (end of the separator's layers)

# The API, beside the separator (its stemkube-contract==0.1.0 is the one installed above), and
# the data folder, owned by the user the image runs as so that a new named volume mounted there
# starts with that owner.
COPY api/pyproject.toml api/README.md /src/api/
COPY api/src /src/api/src
RUN /opt/venv/bin/python -m pip install --no-cache-dir /src/api \
 && rm -rf /src \
 && mkdir -p /data && chown 10001:10001 /data

# The weights local mode separates with, baked in (build-time network); MODELS= leaves them
# to the first separation (HF_HOME), to a mounted cache or to a mounted model folder
# (STEMKUBE_MODEL_REPO).
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
LABEL org.opencontainers.image.title="stemkube-local" \
      org.opencontainers.image.description="The stemkube REST API running Demucs separations on this machine (local mode)"
USER 10001:10001
WORKDIR /home/stemkube
VOLUME /data
EXPOSE 8000
# Healthy once /readyz answers 200: the port open and the model's weights found (no curl here).
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/readyz', timeout=8)"]
# The program is the entrypoint and local mode its default arguments, so that the same image
# runs `stemkube-api keys create --local ...` (docker compose run --rm stemkube keys create ...).
# On 0.0.0.0, a non-loopback address, the service refuses to start until /data holds a key
# (or --no-auth is given): see README.md, "With Docker".
ENTRYPOINT ["stemkube-api"]
CMD ["--local", "--host=0.0.0.0", "--port=8000"]
