# The sms-replies image: one image, the command picks the role (ingest, worker, sinks, api).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir '.[postgres,clickhouse]'
USER nobody
ENTRYPOINT ["sms-replies"]
