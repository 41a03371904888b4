# The Autan processes for compose.yaml: one image, the command picks the role.
FROM python:3.11-slim
ENV ORT_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
# bubblewrap isolates the workers (setpriv and prlimit come with util-linux).
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY runtime runtime
COPY broker broker
COPY storage storage
COPY functions functions
RUN pip install --no-cache-dir '.[cpu,models]'
ENTRYPOINT ["autan"]
CMD ["serve"]
