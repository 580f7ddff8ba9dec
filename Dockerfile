# bnplctl: the operator CLI and scheduler of the BNPL debt & refund service.
# Run it against a PostgreSQL server: docker run -e BNPL_DATABASE_URL=postgresql://… bnplctl users list
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
ENTRYPOINT ["bnplctl"]
CMD ["--help"]
