# syntax=docker/dockerfile:1
# The modelmon sidecar image: `modelmon serve` on a slim Python base, as a non-root user.
#
#   docker build -t modelmon:0.1.0 .        # from the repository root (the build context)
#
# The image is built and published by CI elsewhere: no container engine runs where this code is
# developed and tested, so tests/test_dockerfile.py checks this file statically (hadolint, the
# pinned base, the non-root user, that every COPY source exists and passes .dockerignore, that
# the package builds from exactly what is copied, and that the HEALTHCHECK command works against
# a running sidecar).
#
# The base is pinned to an exact CPython patch release and Debian release; CI pins its digest
# when it builds (`FROM python:3.11.14-slim-trixie@sha256:...`, or a Renovate/Dependabot rule):
# a digest cannot be looked up, and so not checked, from here. 3.11 is the Python the test suite
# runs on.

# --- build: a virtual environment with modelmon and its dependencies ---------------------------
FROM python:3.11.14-slim-trixie AS build
WORKDIR /src
# Every runtime dependency (NumPy, SciPy, httptools, uvloop, orjson, psutil, msgspec, aiohttp)
# ships manylinux wheels for CPython 3.11 on x86-64 and arm64: no compiler is installed, even
# here. pip and setuptools are removed from the environment once it is built.
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python -m venv /opt/modelmon \
    && /opt/modelmon/bin/pip install --no-cache-dir --disable-pip-version-check . \
    && /opt/modelmon/bin/pip uninstall --yes --disable-pip-version-check pip setuptools

# --- run: the base image, the environment, a non-root user --------------------------------------
FROM python:3.11.14-slim-trixie
LABEL org.opencontainers.image.title="modelmon" \
      org.opencontainers.image.description="Prometheus-native monitoring sidecar for machine-learning models" \
      org.opencontainers.image.licenses="Apache-2.0"
# The user the Helm chart runs as (sidecar.securityContext.runAsUser). The base image's own
# installer goes too: nothing is installed at run time.
RUN groupadd --system --gid 10001 modelmon \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin modelmon \
    && python -m pip uninstall --yes --disable-pip-version-check pip setuptools wheel
COPY --from=build /opt/modelmon /opt/modelmon
# No .pyc written at run time (the root filesystem is read-only in Kubernetes; the environment's
# modules were compiled when they were installed); logs unbuffered.
ENV PATH=/opt/modelmon/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# traffic (the proxy) and admin (/metrics, /healthz, /readyz, the push API)
EXPOSE 8000 9400
# /healthz never depends on the model. There is no curl in the slim image: Python asks. The admin
# port follows MODELMON_SERVER__ADMIN_PORT when it is set. (Kubernetes ignores HEALTHCHECK: the
# chart's liveness and readiness probes do this job there.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MODELMON_SERVER__ADMIN_PORT', '9400') + '/healthz', timeout=4)"]
ENTRYPOINT ["modelmon", "serve"]
