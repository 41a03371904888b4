# The Autan processes for compose.yaml: one image, the command picks the role.
FROM python:3.11-slim
ENV ORT_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY runtime runtime
COPY broker broker
COPY storage storage
COPY functions functions
RUN pip install --no-cache-dir '.[cpu,models]'
ENTRYPOINT ["autan"]
CMD ["serve"]
