# pgpipe serve: the HTTP API with terraform and ansible-core, running as a non-root user.
#
#   docker build -t pgpipe .
#   docker run --rm -e PGPIPE_API_TOKEN -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY \
#     -v pgpipe-data:/data -p 127.0.0.1:8080:5000 pgpipe
#
# Nothing secret is baked in: the API token and AWS credentials come from the environment at run time, and
# workspaces (state, plans, generated passwords) live in the /data volume. The terraform binary that pip
# installs is linux/amd64.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/pgpipe/src
COPY setup.cfg pyproject.toml README.md ./
COPY pipeline ./pipeline
RUN python -m venv /opt/pgpipe/venv \
    && /opt/pgpipe/venv/bin/pip install ".[api]"

FROM python:3.11-slim-bookworm
# ansible reaches the hosts over SSH. Debian's security updates replace exact versions, so none is pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/pgpipe pgpipe \
    && install -d -o pgpipe -g pgpipe -m 0700 /data
COPY --from=build /opt/pgpipe/venv /opt/pgpipe/venv
COPY templates /opt/pgpipe/templates
COPY roles /opt/pgpipe/roles
COPY playbooks /opt/pgpipe/playbooks
COPY ansible.cfg /opt/pgpipe/ansible.cfg
ENV PATH=/opt/pgpipe/venv/bin:$PATH \
    PGPIPE_HOME=/opt/pgpipe \
    PGPIPE_WORKDIR=/data \
    CHECKPOINT_DISABLE=1 \
    PYTHONUNBUFFERED=1
# Fails the build when either tool is missing.
RUN terraform version && ansible-playbook --version && pgpipe --version

USER 10001:10001
WORKDIR /home/pgpipe
VOLUME ["/data"]
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]
# Inside a container the API must listen beyond loopback for -p to reach it, so it refuses to start without
# PGPIPE_API_TOKEN; publish the port on the host's loopback (-p 127.0.0.1:8080:5000) unless a proxy is in front.
CMD ["pgpipe", "serve", "--host", "0.0.0.0", "--port", "5000"]
