# agentq application image (bridge, workers, migrations, model build).
# CPU inference: torch comes from the PyTorch CPU wheel index (no CUDA
# libraries); GPU images would add the `gpu` extra on a CUDA base instead.
FROM python:3.11-slim

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
