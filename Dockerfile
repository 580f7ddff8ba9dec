# bnplctl: the operator CLI and scheduler of the BNPL debt & refund service.
# Default: the long-lived scheduler against the server in BNPL_DATABASE_URL.
#   docker run -e BNPL_DATABASE_URL=postgresql://… -e BNPL_SECRET_KEY_FILE=/run/secrets/bnpl.key bnplctl
# One-shot commands: docker run … bnplctl debt sweep
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BNPL_DATA_DIR=/var/lib/bnplctl

RUN useradd --create-home --uid 10001 bnpl \
    && mkdir -p /var/lib/bnplctl \
    && chown bnpl:bnpl /var/lib/bnplctl

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY bnplctl ./bnplctl
COPY migrations ./migrations
RUN pip install --no-cache-dir .

USER 10001:10001

# Healthy: database reachable, schema at head, a successful sweep in the last 26 h.
HEALTHCHECK --interval=5m --timeout=30s --start-period=2m --retries=2 \
    CMD ["bnplctl", "status", "-o", "json"]

ENTRYPOINT ["bnplctl"]
CMD ["scheduler", "run"]
