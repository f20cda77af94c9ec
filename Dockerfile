# syntax=docker/dockerfile:1
#
# The runnerfleet image: one image, two processes.
#   operator: runnerfleet operator        (the default CMD)
#   listener: runnerfleet listen ...      (the TeamListener Deployment sets command/args)
#
# Build:  docker build -t ghcr.io/runnerfleet/runnerfleet:0.1.0 .
# The tag must match `version` in pyproject.toml and DEFAULT_OPERATOR_IMAGE in
# runnerfleet/conventions.py (tests/unit/test_dockerfile.py checks both).

# Both stages use the same base so the venv's interpreter symlinks resolve in the final stage.
# Pinned to a full patch version here; CI should pin the digest as well
# (python:3.11.11-slim-bookworm@sha256:<digest>) and let Renovate/Dependabot bump it.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- builder: build the wheel, install it and its dependencies into /opt/venv ---------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheel needs: metadata (pyproject + README, its `readme`) and the package.
COPY pyproject.toml README.md ./
COPY operator/ operator/

# The venv gets no pip/setuptools of its own: the builder's pip installs into it (--python).
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv --without-pip /opt/venv \
 && python -m pip --python /opt/venv/bin/python install /dist/runnerfleet-*.whl \
 && /opt/venv/bin/runnerfleet --help > /dev/null

# --- final: the venv only, run as a fixed non-root user -----------------------------------
FROM ${PYTHON_IMAGE}

ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="runnerfleet" \
      org.opencontainers.image.description="Kubernetes operator for ephemeral, one-job GitHub Actions runners, per team." \
      org.opencontainers.image.source="https://github.com/runnerfleet/runnerfleet" \
      org.opencontainers.image.url="https://github.com/runnerfleet/runnerfleet" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A named user so tools that look up the passwd entry work; no home, no login shell.
RUN groupadd --system --gid 65532 runnerfleet \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin runnerfleet

COPY --from=builder /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# 9090: /metrics and /healthz (operator and listener); 8080: the listener's GitHub webhook.
EXPOSE 9090 8080

# Numeric, so `runAsNonRoot: true` can verify it without reading /etc/passwd.
USER 65532:65532
WORKDIR /

# Exec form: runnerfleet is PID 1 and gets SIGTERM directly; no shell at runtime.
ENTRYPOINT ["runnerfleet"]
CMD ["operator"]
