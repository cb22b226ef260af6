# The sms-replies image: one image, the command picks the role (ingest, worker, sinks, api).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir '.[postgres,clickhouse]'
# A user of its own (not nobody, whose files other services may share) that owns /data:
# Docker copies this ownership into a fresh named volume mounted there.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin replies \
    && mkdir -p /data && chown replies:replies /data && chmod 0750 /data
USER replies
VOLUME /data
ENTRYPOINT ["sms-replies"]
