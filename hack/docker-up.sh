#!/usr/bin/env bash
# Starts a Docker engine when none answers (CI's machine has Debian's docker.io installed but
# no service manager running it). Needs root; a no-op where Docker already runs.
set -euo pipefail
DOCKER=${DOCKER:-docker}
LOG=${DOCKERD_LOG:-/tmp/stemkube-dockerd.log}

if $DOCKER info >/dev/null 2>&1; then
  exit 0
fi
command -v dockerd >/dev/null || PATH=$PATH:/usr/sbin
nohup dockerd >"$LOG" 2>&1 &
for _ in $(seq 60); do
  if $DOCKER info >/dev/null 2>&1; then
    echo "dockerd started (log: $LOG)"
    exit 0
  fi
  sleep 1
done
echo "docker-up: dockerd did not answer within 60 s; its log:" >&2
tail -20 "$LOG" >&2
exit 1
