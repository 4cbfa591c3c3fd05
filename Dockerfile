# Images for docker-compose.yml, built from this checkout. No torch: indexing needs only the base
# package, the page adds [ui], the python models [serve]; `mmsearch export` runs on the host.

# The search page and the indexer.
FROM python:3.11-slim-bookworm AS app
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
COPY . /src
RUN pip install "/src[ui]" && rm -rf /src

# Triton 2.51 with the native onnxruntime backend. The python models import mmsearch in the
# image's python3 (the python backend's interpreter). A separate target on PYTHONPATH means
# pip never replaces the image's own packages (apt modules, its numpy) and wins over them.
FROM nvcr.io/nvidia/tritonserver:24.10-py3 AS triton
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONPATH=/opt/mmsearch
COPY . /src
RUN python3 -m pip install --target /opt/mmsearch "/src[serve]" && rm -rf /src
