#!/usr/bin/env bash
# One-shot of docker-compose.yml, run with the Elasticsearch image (it has curl) once the node
# is healthy. Idempotent: every call sets, never appends.
#  - kibana_system gets its password, so Kibana can start (Kibana refuses the elastic superuser);
#  - the platform gets its own user whose role only reaches the platform's indices.
set -euo pipefail

: "${ES_URL:?}" "${ELASTIC_PASSWORD:?}" "${KIBANA_SYSTEM_PASSWORD:?}"
: "${PLATFORM_USER:?}" "${PLATFORM_PASSWORD:?}"

# JSON string literal of $1 (the passwords come from .env and may hold quotes or backslashes).
json_string() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

es() { # METHOD PATH [BODY]: fail loudly with Elasticsearch's answer
    local method=$1 path=$2 body=${3:-}
    local out status args=()
    [ -n "$body" ] && args=(--data-binary "$body")
    out=$(mktemp)
    status=$(curl -sS -o "$out" -w '%{http_code}' -u "elastic:$ELASTIC_PASSWORD" \
        -X "$method" -H 'Content-Type: application/json' "${args[@]}" "$ES_URL$path")
    if [ "${status:0:1}" != 2 ]; then
        echo "$method $path -> HTTP $status: $(cat "$out")" >&2
        exit 1
    fi
    rm -f "$out"
}

echo "kibana_system: setting its password"
es POST /_security/user/kibana_system/_password "{\"password\": $(json_string "$KIBANA_SYSTEM_PASSWORD")}"

# What the indexer, the archiver and the reconciliation need: index templates, lifecycle policies
# and the rides / demand / logs / refused-rides indices (the families of IndexerSettings'
# es_*_prefix; tests/unit/test_compose.py checks them); nothing else in the cluster.
echo "role xrides_platform and user $PLATFORM_USER"
es PUT /_security/role/xrides_platform '{
  "cluster": ["monitor", "manage_index_templates", "manage_ilm"],
  "indices": [
    {"names": ["rides-*", "ride-demand-*", "logs-*", "failed-rides-*"], "privileges": ["all"]}
  ]
}'
es PUT "/_security/user/$PLATFORM_USER" "{
  \"password\": $(json_string "$PLATFORM_PASSWORD"),
  \"roles\": [\"xrides_platform\"],
  \"full_name\": \"XRides platform processes\"
}"
echo "elasticsearch security set up"
