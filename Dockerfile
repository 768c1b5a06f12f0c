# syntax=docker/dockerfile:1
# The serving image: the `serve` extra only (no PyTorch), a non-root user, the bundled model
# repository copied in (mount another over /app/exports to serve your own). HTTP on 3000,
# gRPC on 8001, both on the CMD's --host 0.0.0.0.
#   docker build -t digitserve:cpu .                 (CPU, the default target)
#   docker build -t digitserve:gpu --target gpu .    (CUDA 13 + cuDNN 9, onnxruntime-gpu)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# CUDA 13: onnxruntime-gpu 1.31's CUDA provider links libcublas.so.13 and libcudart.so.13
# (readelf -d), so a CUDA 12 base loads no GPU at all.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

# ---- CPU: build the virtual environment -------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu-build
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml constraints.txt README.md ./
COPY modelrepo modelrepo
COPY service service
# Install the serve extra's dependencies pinned by constraints.txt, then drop the project
# itself: the image runs its source from /app.
RUN /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt '.[serve]' \
 && /opt/venv/bin/pip uninstall -y digitserve \
 && ! /opt/venv/bin/python -c "import torch" 2>/dev/null

# ---- CPU runtime (default target) ---------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
RUN useradd --create-home --uid 10001 app
COPY --from=cpu-build /opt/venv /opt/venv
WORKDIR /app
COPY modelrepo modelrepo
COPY service service
COPY exports exports
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DIGITSERVE_HOST=0.0.0.0 \
    DIGITSERVE_PORT=3000 \
    DIGITSERVE_GRPC_PORT=8001 \
    BENTOML_HOME=/tmp/bentoml
USER app
# 3000: HTTP (the routes, /v2 REST, /metrics, /readyz); 8001: gRPC, Triton's
# inference.GRPCInferenceService in every worker (DIGITSERVE_GRPC_PORT; 0 turns it off).
EXPOSE 3000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=2).status != 200)"]
# The same command line as `make serve`, listening on all interfaces inside the container.
CMD ["python", "-m", "service", "--model-repo", "exports", "--port", "3000", "--host", "0.0.0.0"]

# ---- GPU: onnxruntime-gpu instead of onnxruntime on a CUDA runtime base -------------------
FROM ${CUDA_IMAGE} AS gpu-build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY pyproject.toml constraints.txt README.md ./
COPY modelrepo modelrepo
COPY service service
RUN /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt '.[serve]' \
 && /opt/venv/bin/pip uninstall -y digitserve onnxruntime \
 && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt onnxruntime-gpu

FROM ${CUDA_IMAGE} AS gpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 app
COPY --from=gpu-build /opt/venv /opt/venv
WORKDIR /app
COPY modelrepo modelrepo
COPY service service
COPY exports exports
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DIGITSERVE_HOST=0.0.0.0 \
    DIGITSERVE_PORT=3000 \
    DIGITSERVE_GRPC_PORT=8001 \
    DIGITSERVE_DEVICE=cuda \
    DIGITSERVE_INFERENCE_THREAD=true \
    BENTOML_HOME=/tmp/bentoml
USER app
EXPOSE 3000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=2).status != 200)"]
CMD ["python", "-m", "service", "--model-repo", "exports", "--port", "3000", "--host", "0.0.0.0"]
