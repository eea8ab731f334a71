#!/usr/bin/env bash
# One-shot of docker-compose.yml: create the platform's topics (idempotent), then show them.
#
#   create-topics.sh NAME:PARTITIONS[:RETENTION_MS]...
#
# BOOTSTRAP_SERVERS, REPLICATION_FACTOR and MIN_INSYNC_REPLICAS come from the environment.
# A topic that exists is left as it is: partitions can be added later, never removed, and a
# changed count would move keys (booking ids) to other partitions.
set -euo pipefail

: "${BOOTSTRAP_SERVERS:?BOOTSTRAP_SERVERS is not set}"
: "${REPLICATION_FACTOR:?REPLICATION_FACTOR is not set}"
: "${MIN_INSYNC_REPLICAS:?MIN_INSYNC_REPLICAS is not set}"
topics_cmd=/opt/kafka/bin/kafka-topics.sh

if [ "$#" -eq 0 ]; then
    echo "usage: $0 NAME:PARTITIONS..." >&2
    exit 2
fi

names=()
for spec in "$@"; do
    IFS=: read -r name partitions retention extra <<<"$spec"
    if [ -z "$name" ] || [ -n "$extra" ] || ! [[ "$partitions" =~ ^[1-9][0-9]*$ ]] \
        || ! [[ "${retention:-1}" =~ ^[1-9][0-9]*$ ]]; then
        echo "bad topic spec '$spec' (want NAME:PARTITIONS[:RETENTION_MS])" >&2
        exit 2
    fi
    configs=(--config "min.insync.replicas=$MIN_INSYNC_REPLICAS")
    if [ -n "$retention" ]; then
        configs+=(--config "retention.ms=$retention")
    fi
    echo "topic $name: $partitions partitions, replication factor $REPLICATION_FACTOR, min ISR $MIN_INSYNC_REPLICAS"
    "$topics_cmd" --bootstrap-server "$BOOTSTRAP_SERVERS" --create --if-not-exists \
        --topic "$name" --partitions "$partitions" --replication-factor "$REPLICATION_FACTOR" \
        "${configs[@]}"
    names+=("$name")
done

for name in "${names[@]}"; do
    "$topics_cmd" --bootstrap-server "$BOOTSTRAP_SERVERS" --describe --topic "$name"
done
