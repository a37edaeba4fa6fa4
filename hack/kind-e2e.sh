#!/usr/bin/env bash
# make kind-e2e: the README's curl flow against the chart installed in kind (make kind-deploy).
# API keys are on (the chart's default): the key is $STEMKUBE_API_KEY if set, else one made for
# this run in the API's pod as NOTES.txt says (kubectl exec ... stemkube-api keys create) and
# revoked at the end. A release installed with api.auth.enabled=false is called without one.
set -euo pipefail
api=${STEMKUBE_API_URL:-http://localhost:8000}
namespace=${STEMKUBE_NAMESPACE:-stemkube}
deploy=deploy/stemkube-api
if [ -n "${KUBECTL:-}" ]; then
  kubectl=$KUBECTL
elif [ -x "${STEMKUBE_TOOLS_BIN:-}/kubectl" ]; then
  kubectl=$STEMKUBE_TOOLS_BIN/kubectl
else
  kubectl=kubectl
fi
work=$(mktemp -d)
made_key=""
cleanup() {
  if [ -n "$made_key" ]; then
    "$kubectl" -n "$namespace" exec "$deploy" -- stemkube-api keys revoke "$made_key" >/dev/null \
      || echo "could not revoke API key $made_key" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The key reaches curl in a header file (mode 600): never on a command line or in the output.
umask 077
: >"$work/headers"
if [ -n "${STEMKUBE_API_KEY:-}" ]; then
  printf 'Authorization: Bearer %s\n' "$STEMKUBE_API_KEY" >"$work/headers"
elif [ "$("$kubectl" -n "$namespace" get "$deploy" \
  -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="STEMKUBE_AUTH")].value}')" = off ]; then
  echo "API keys are off in this release (api.auth.enabled=false): no key sent"
else
  name="kind-e2e-$(date +%s)-$$"
  key=$("$kubectl" -n "$namespace" exec "$deploy" -- \
    stemkube-api keys create --name "$name" --tenant kind-e2e)
  made_key=$name
  printf 'Authorization: Bearer %s\n' "$key" >"$work/headers"
  echo "API key $name (tenant kind-e2e) made for this run"
fi
call() { curl -fsS -H "@$work/headers" "$@"; }

ffmpeg -loglevel error -f lavfi -i "sine=frequency=440:duration=5" -ac 2 "$work/song.mp3"
job=$(call -F "file=@$work/song.mp3" "$api/upload" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
echo "job $job"
for _ in $(seq 1 180); do
  status=$(call "$api/status/$job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  echo "status: $status"
  case "$status" in completed) break ;; failed) call "$api/status/$job"; exit 1 ;; esac
  sleep 5
done
(cd "$work" && call -O -J "$api/download/$job")
unzip -l "$work"/*.zip
call -X DELETE "$api/job/$job"; echo
echo "kind e2e: ok"
