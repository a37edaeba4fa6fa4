#!/usr/bin/env bash
# make kind-e2e: the README's curl flow against the chart installed in kind (make kind-deploy).
set -euo pipefail
api=${STEMKUBE_API_URL:-http://localhost:8000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ffmpeg -loglevel error -f lavfi -i "sine=frequency=440:duration=5" -ac 2 "$work/song.mp3"
job=$(curl -fsS -F "file=@$work/song.mp3" "$api/upload" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
echo "job $job"
for _ in $(seq 1 180); do
  status=$(curl -fsS "$api/status/$job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  echo "status: $status"
  case "$status" in completed) break ;; failed) curl -fsS "$api/status/$job"; exit 1 ;; esac
  sleep 5
done
(cd "$work" && curl -fsS -O -J "$api/download/$job")
unzip -l "$work"/*.zip
curl -fsS -X DELETE "$api/job/$job"
echo "kind e2e: ok"
