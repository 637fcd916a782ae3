# agentq application image (bridge, workers, migrations, model build), installed from uv.lock:
# the same lock as scripts/bootstrap.sh and CI (scripts/locked.py exports it with hashes).
#
# CPU image (default): the runtime plus the `build` extra, so `agentq models build` runs here.
# torch is the locked version from the PyTorch CPU wheel index: the registry's Linux torch is a
# CUDA build (~3 GB of nvidia-* wheels) and PyPI has no CPU-only one, so the lock's torch and its
# CUDA stack are left out and `torch==<locked>+cpu` comes from there (version-pinned; that index
# is not in the lock, so not hash-checked). The worker runtime never imports torch.
#
# GPU worker image (compose service worker-gpu):  docker build --build-arg AGENTQ_GPU=1 .
# the runtime plus the `gpu` extra (onnxruntime-gpu replacing onnxruntime, with the CUDA and
# cuDNN runtime libraries from their NVIDIA wheels, registered with ldconfig), no build extra;
# the driver comes from the host through the NVIDIA Container Toolkit.
FROM python:3.11-slim

ARG AGENTQ_GPU=0
# Must equal [tool.agentq] uv-version in pyproject.toml (tests/unit/test_packaging.py).
ARG UV_VERSION=0.13.8

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    AGENTQ_HOME=/var/tmp/agentq \
    AGENTQ_MODELS_DIR=/models

WORKDIR /app

RUN pip install "uv==${UV_VERSION}"

# 1. Locked dependencies only (cached layer: changes only when the lock does).
COPY pyproject.toml uv.lock ./
COPY scripts/locked.py ./scripts/locked.py
RUN set -e; \
    if [ "$AGENTQ_GPU" = "0" ]; then \
      python scripts/locked.py export --extras build --without-torch -o /tmp/requirements.txt; \
      uv pip install --system --no-deps --require-hashes -r /tmp/requirements.txt; \
      uv pip install --system --no-deps --index-url https://download.pytorch.org/whl/cpu \
        "torch==$(python scripts/locked.py version torch)+cpu"; \
      python -c "import torch, onnx, sklearn, onnxruntime"; \
    elif [ "$AGENTQ_GPU" = "1" ]; then \
      python scripts/locked.py export --extras gpu --without onnxruntime -o /tmp/requirements.txt; \
      uv pip install --system --no-deps --require-hashes -r /tmp/requirements.txt; \
      python -c "import glob, site; print('\n'.join(sorted(glob.glob(site.getsitepackages()[0] + '/nvidia/*/lib'))))" > /etc/ld.so.conf.d/agentq-nvidia.conf; \
      ldconfig; \
      python -c "import onnxruntime as ort; assert 'CUDAExecutionProvider' in ort.get_available_providers(), ort.get_available_providers()"; \
    else echo "AGENTQ_GPU must be 0 or 1" >&2; exit 1; fi; \
    rm /tmp/requirements.txt

# 2. The project itself: every room (tests/unit/test_compose.py checks each is copied).
COPY alembic.ini README.md ./
COPY agentq ./agentq
COPY cli ./cli
COPY producers ./producers
COPY bridge ./bridge
COPY workers ./workers
COPY engine ./engine
COPY ops ./ops
COPY models ./models
COPY storage ./storage
COPY migrations ./migrations
COPY bench ./bench
RUN uv pip install --system --no-deps . \
 && python -c "import agentq, cli.main, bridge.consumer, workers.app, ops.reaper"

# Non-root runtime user; model artifacts live in a volume at /models.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin agentq \
 && mkdir -p /models /var/tmp/agentq \
 && chown agentq:agentq /models /var/tmp/agentq
USER agentq

CMD ["agentq", "--help"]
