FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY hub hub
COPY connectors connectors
COPY pipelines pipelines
COPY storage storage
COPY config config
COPY meshub meshub
RUN pip install --no-cache-dir .
RUN useradd --system --home /var/lib/meshub meshub && mkdir -p /var/lib/meshub && chown meshub /var/lib/meshub
USER meshub
EXPOSE 8080
ENTRYPOINT ["meshub"]
CMD ["run", "--config", "/etc/meshub/meshub.toml", "--data-dir", "/var/lib/meshub"]
