# The bundled MinIO's set-up (the chart's post-install/upgrade hook; tests run it too): the
# bucket, and one user per component with the least rights it needs. Idempotent.
# Environment: MINIO_URL, BUCKET, SETUP_DIR (the policies, <component>.json), the root
# credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and each component's
# (API_ACCESS_KEY, API_SECRET_KEY, OPERATOR_ACCESS_KEY, OPERATOR_SECRET_KEY).
set -eu
mc alias set stemkube "$MINIO_URL" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >/dev/null
mc mb --ignore-existing "stemkube/$BUCKET"
user() {  # component, access key, secret key
  mc admin policy create stemkube "stemkube-$1" "$SETUP_DIR/$1.json" >/dev/null
  mc admin user add stemkube "$2" "$3" >/dev/null
  # Attaching again is refused ("already in effect"): then the user must show it.
  mc admin policy attach stemkube "stemkube-$1" --user "$2" >/dev/null 2>&1 \
    || mc admin user info stemkube "$2" | grep -q "stemkube-$1"
  echo "user for $1: policy stemkube-$1"
}
user api "$API_ACCESS_KEY" "$API_SECRET_KEY"
user operator "$OPERATOR_ACCESS_KEY" "$OPERATOR_SECRET_KEY"
