# The Autan processes for compose.yaml and docs/kubernetes: one image, the command picks the
# role (serve, agent, gateway). EXTRAS=cpu leaves the demo models out.
FROM python:3.11-slim
ENV ORT_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1 AUTAN_DATA_DIR=/var/lib/autan
# bubblewrap isolates the workers (setpriv and prlimit come with util-linux).
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --create-home autan \
    && mkdir -p /var/lib/autan && chown autan:autan /var/lib/autan
WORKDIR /app
ARG EXTRAS=cpu,models,fast
# Dependencies first, from the project's metadata alone: a code change rebuilds only the
# layers below.
COPY pyproject.toml README.md ./
RUN mkdir -p runtime broker storage functions \
    && touch runtime/__init__.py broker/__init__.py storage/__init__.py functions/__init__.py \
    && pip install --no-cache-dir ".[${EXTRAS}]" && pip uninstall -y autan \
    && rm -rf runtime broker storage functions
COPY runtime runtime
COPY broker broker
COPY storage storage
COPY functions functions
RUN pip install --no-cache-dir --no-deps .
USER autan
# The process answers on NATS: a control plane, agent or bridge that cannot reach it is
# unhealthy (the bridge has /readyz besides).
HEALTHCHECK --interval=10s --timeout=5s --retries=3 \
    CMD ["python", "-c", "import socket, os; h, p = os.environ.get('AUTAN_NATS_URL', 'nats://127.0.0.1:4222').split(',')[0].split('//')[-1].rsplit(':', 1); socket.create_connection((h, int(p)), 3)"]
ENTRYPOINT ["autan"]
CMD ["serve"]
