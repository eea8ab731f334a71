# syntax=docker/dockerfile:1
# The platform's own processes (api, persister, migrate, archiver): one image, the process is
# chosen by the command (see docker-compose.yml). Built from the repository root.
#
# Versions come from requirements.lock. The lock also pins the dev tools and PyFlink (the
# project venv holds everything), so it is used as a constraints file: pip installs only what
# the package needs at run time, each at its locked version, and no test or lint tools.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, from the lock and pyproject alone, so a source change reuses this layer.
# (With no packages present the project builds as an empty distribution; only its deps matter.)
COPY requirements.lock pyproject.toml ./
RUN grep -v '^-e ' requirements.lock > /tmp/constraints.txt \
    && /opt/venv/bin/pip install --constraint /tmp/constraints.txt . \
    && /opt/venv/bin/pip uninstall --yes xrides
COPY . .
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -c "import ingest_service.cli"

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 xrides \
    && useradd --system --uid 10001 --gid xrides --home-dir /app --shell /usr/sbin/nologin xrides \
    && mkdir /app && chown xrides:xrides /app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER xrides
# 8000: the API; 9101: the persister's metrics and health.
EXPOSE 8000 9101
CMD ["python", "-m", "ingest_service"]
