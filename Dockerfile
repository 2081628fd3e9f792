# syntax=docker/dockerfile:1
# The Conclave workspace: one image, every service under supervisord, all state on /workspace.
#   docker build -t conclave:latest .
# Toggles and versions: scripts/stack/versions.env (a build arg of the same name wins), e.g.
#   docker build --build-arg CONCLAVE_ENABLE_NEKO=0 -t conclave:no-neko .

# ---- Builder: conclave-agent, release, from the committed Cargo.lock ----
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src/ src/
COPY migrations/ migrations/
COPY prompts/ prompts/
COPY benches/ benches/
RUN cargo build --release --locked --bin conclave-agent

# ---- Runtime ----
FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04

ARG CONCLAVE_ENABLE_POSTGRES=1 CONCLAVE_ENABLE_NGINX=1 CONCLAVE_ENABLE_SYNAPSE=1 CONCLAVE_ENABLE_ELEMENT=1 \
    CONCLAVE_ENABLE_CHROMADB=1 CONCLAVE_ENABLE_OLLAMA=1 CONCLAVE_ENABLE_PLANKA=1 CONCLAVE_ENABLE_BROWSER=1 \
    CONCLAVE_ENABLE_NEKO=1 CONCLAVE_ENABLE_TTYD=1 CONCLAVE_ENABLE_CODING_AGENTS=1 CONCLAVE_ENABLE_SSHD=1 \
    CONCLAVE_ENABLE_AGENT=1 CONCLAVE_ENABLE_EMBEDDER=0

ENV DEBIAN_FRONTEND=noninteractive \
    CONCLAVE_HOME=/opt/conclave \
    CONCLAVE_PREFIX=/opt/conclave \
    CONCLAVE_ROOT=/workspace \
    CONCLAVE_ENABLE_POSTGRES=${CONCLAVE_ENABLE_POSTGRES} CONCLAVE_ENABLE_NGINX=${CONCLAVE_ENABLE_NGINX} \
    CONCLAVE_ENABLE_SYNAPSE=${CONCLAVE_ENABLE_SYNAPSE} CONCLAVE_ENABLE_ELEMENT=${CONCLAVE_ENABLE_ELEMENT} \
    CONCLAVE_ENABLE_CHROMADB=${CONCLAVE_ENABLE_CHROMADB} CONCLAVE_ENABLE_OLLAMA=${CONCLAVE_ENABLE_OLLAMA} \
    CONCLAVE_ENABLE_PLANKA=${CONCLAVE_ENABLE_PLANKA} CONCLAVE_ENABLE_BROWSER=${CONCLAVE_ENABLE_BROWSER} \
    CONCLAVE_ENABLE_NEKO=${CONCLAVE_ENABLE_NEKO} CONCLAVE_ENABLE_TTYD=${CONCLAVE_ENABLE_TTYD} \
    CONCLAVE_ENABLE_CODING_AGENTS=${CONCLAVE_ENABLE_CODING_AGENTS} CONCLAVE_ENABLE_SSHD=${CONCLAVE_ENABLE_SSHD} \
    CONCLAVE_ENABLE_AGENT=${CONCLAVE_ENABLE_AGENT} CONCLAVE_ENABLE_EMBEDDER=${CONCLAVE_ENABLE_EMBEDDER}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The install scripts first (their layer is kept while only configs or the agent change).
# Distribution packages follow the base image's release (versions.env pins what is not one);
# pinning each to a Debian version would break the build at the next security update.
COPY scripts/stack/ /opt/conclave/scripts/stack/
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl python3 python3-venv \
    && bash /opt/conclave/scripts/stack/install.sh --all \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /root/.cache/pip /root/.npm /tmp/*

COPY configs/ /opt/conclave/configs/
COPY dashboard/ /opt/conclave/dashboard/
COPY skills/ /opt/conclave/skills/
COPY --from=builder /src/target/release/conclave-agent /usr/local/bin/conclave-agent
RUN chmod 755 /opt/conclave/scripts/stack/*.sh \
    && conclave-agent --version

# nginx (the entry point), SSH, and the services' direct ports that listen beyond loopback
# (Synapse, Planka, N.eko); Chroma, Ollama and ttyd stay on 127.0.0.1 behind nginx's basic auth.
EXPOSE 8888 22 8008 1337 8080
EXPOSE 52000-52100/udp

VOLUME ["/workspace"]

HEALTHCHECK --interval=60s --timeout=10s --start-period=300s --retries=3 \
    CMD ["/opt/conclave/scripts/stack/healthcheck.sh"]

ENTRYPOINT ["/opt/conclave/scripts/stack/startup.sh"]
