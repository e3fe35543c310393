# A bare Debian 12 node for the classic-install test: Debian's python3 (what the bundle targets)
# and systemd's tools (for `systemd-analyze verify`); the test runs it with no network.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv systemd procps \
 && rm -rf /var/lib/apt/lists/*
