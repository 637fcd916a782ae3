# agentq application image (bridge, workers, migrations, model build).
# CPU inference by default: torch comes from the PyTorch CPU wheel index (no CUDA
# libraries; torch only builds models, the worker runtime never imports it).
#
# GPU worker image (compose service worker-gpu):  docker build --build-arg AGENTQ_GPU=1 .
# installs the `gpu` extra (onnxruntime-gpu, replacing onnxruntime) with the CUDA 12 and
# cuDNN 9 runtime libraries from their NVIDIA wheels, registered with ldconfig; the
# driver comes from the host through the NVIDIA Container Toolkit.
FROM python:3.11-slim

ARG AGENTQ_GPU=0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AGENTQ_HOME=/var/tmp/agentq \
    AGENTQ_MODELS_DIR=/models

WORKDIR /app

# 1. CPU torch first, so the dependency install below does not pull CUDA wheels.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.5"

# 2. Dependencies only (cached layer: changes only when pyproject.toml does).
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# 2b. GPU image only: swap onnxruntime for the `gpu` extra (same `onnxruntime` module).
RUN if [ "$AGENTQ_GPU" = "1" ]; then \
      python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['optional-dependencies']['gpu']))" > /tmp/gpu.txt \
   && pip uninstall -y onnxruntime \
   && sed 's/^onnxruntime-gpu/onnxruntime-gpu[cuda,cudnn]/' /tmp/gpu.txt > /tmp/gpu-libs.txt \
   && pip install -r /tmp/gpu-libs.txt \
   && python -c "import glob, site; print('\n'.join(sorted(glob.glob(site.getsitepackages()[0] + '/nvidia/*/lib'))))" > /etc/ld.so.conf.d/agentq-nvidia.conf \
   && ldconfig \
   && python -c "import onnxruntime as ort; assert 'CUDAExecutionProvider' in ort.get_available_providers(), ort.get_available_providers()" \
   && rm /tmp/gpu.txt /tmp/gpu-libs.txt; \
    elif [ "$AGENTQ_GPU" != "0" ]; then echo "AGENTQ_GPU must be 0 or 1" >&2; exit 1; fi

# 3. The project itself.
COPY alembic.ini ./
COPY agentq ./agentq
COPY producers ./producers
COPY workers ./workers
COPY models ./models
COPY storage ./storage
COPY migrations ./migrations
COPY bench ./bench
RUN pip install --no-deps . \
 && python -c "import agentq, workers.app"

# Non-root runtime user; model artifacts live in a volume at /models.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin agentq \
 && mkdir -p /models /var/tmp/agentq \
 && chown agentq:agentq /models /var/tmp/agentq
USER agentq

CMD ["agentq", "--help"]
