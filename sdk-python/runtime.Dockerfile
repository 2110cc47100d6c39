# The asya-python-runtime image: the base image of `runtime: python` actors, whose handlers need
# native packages (torch, CUDA, C extensions). Debian with python3 and a venv in /opt/venv, first
# on PATH and owned by the image's user, holding the asya package; the entrypoint is the asya
# runtime (`python3 -m asya.runtime`, serving the asya host on /var/run/asya/runtime.sock).
# Extend it:
#   FROM ghcr.io/asya-sh/asya-python-runtime:TAG
#   RUN pip install --no-cache-dir torch==2.5.1
#   COPY handler.py /app/
# (`USER root` for apt-get, then back to `USER 65532:65532`). Build from the repository root:
#   docker build -f sdk-python/runtime.Dockerfile -t asya-python-runtime .
# scripts/images.sh builds the same image without a Docker engine: debootstrap of the suite in
# FROM (it must be the building machine's) with the packages of the apt-get install line below,
# then the steps of the second RUN in a chroot. It reads ENTRYPOINT, CMD, USER, ENV, LABEL,
# EXPOSE and WORKDIR from this file: change them here, in the exec form, without variables.
FROM debian:bookworm-slim

# Versions follow the suite's point and security releases; pinning them would break the build
# at every one of them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# The asya package without its dependencies: the runtime needs only the standard library, and
# the SDK's (componentize-py, the MCP client, ...) serve building and the CLI, not the actors.
# The `asya` CLI is removed for that reason; `pip install asya` brings it back.
COPY sdk-python/pyproject.toml sdk-python/README.md /tmp/asya-sdk/
COPY sdk-python/src /tmp/asya-sdk/src
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/asya-sdk \
    && rm -rf /tmp/asya-sdk /opt/venv/bin/asya \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --create-home --home-dir /home/nonroot \
        --shell /usr/sbin/nologin nonroot \
    && chown -R 65532:65532 /opt/venv \
    && install -d -o 65532 -g 65532 /run/asya /app

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8
LABEL org.opencontainers.image.title="asya-python-runtime" \
      org.opencontainers.image.description="asya Python runtime: the base image of runtime: python actors (python3 -m asya.runtime)" \
      org.opencontainers.image.source="https://github.com/asya-sh/asya" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
USER 65532:65532
ENTRYPOINT ["python3", "-m", "asya.runtime"]
