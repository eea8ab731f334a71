#!/usr/bin/env bash
# One-shot of docker-compose.yml: create the platform's topics (idempotent), then show them.
#
#   create-topics.sh NAME:PARTITIONS:RETENTION_MS:REPLICATION:MIN_INSYNC_REPLICAS...
#
# One argument per topic of the registry (xrides/topics.py), as `python -m deploy.render
# --compose-topics` prints them: every topic, rides.es and rides.es-dlq included, gets the
# replication and min.insync.replicas the registry gives it on three brokers. BOOTSTRAP_SERVERS
# comes from the environment. A topic that exists is left as it is: partitions can be added
# later, never removed, and a changed count would move keys (booking ids) to other partitions.
set -euo pipefail

: "${BOOTSTRAP_SERVERS:?BOOTSTRAP_SERVERS is not set}"
topics_cmd=${KAFKA_TOPICS_CMD:-/opt/kafka/bin/kafka-topics.sh}  # a test points it at a stub
number='^[1-9][0-9]*$'

if [ "$#" -eq 0 ]; then
    echo "usage: $0 NAME:PARTITIONS:RETENTION_MS:REPLICATION:MIN_INSYNC_REPLICAS..." >&2
    exit 2
fi

names=()
for spec in "$@"; do
    IFS=: read -r name partitions retention replication min_insync extra <<<"$spec"
    if [ -z "$name" ] || [ -n "$extra" ] || ! [[ "$partitions" =~ $number ]] \
        || ! [[ "$retention" =~ $number ]] || ! [[ "$replication" =~ $number ]] \
        || ! [[ "$min_insync" =~ $number ]] || [ "$min_insync" -gt "$replication" ]; then
        echo "bad topic spec '$spec' (want NAME:PARTITIONS:RETENTION_MS:REPLICATION:MIN_INSYNC_REPLICAS)" >&2
        exit 2
    fi
    echo "topic $name: $partitions partitions, replication factor $replication, min ISR $min_insync"
    "$topics_cmd" --bootstrap-server "$BOOTSTRAP_SERVERS" --create --if-not-exists \
        --topic "$name" --partitions "$partitions" --replication-factor "$replication" \
        --config "min.insync.replicas=$min_insync" --config "retention.ms=$retention"
    names+=("$name")
done

for name in "${names[@]}"; do
    "$topics_cmd" --bootstrap-server "$BOOTSTRAP_SERVERS" --describe --topic "$name"
done
