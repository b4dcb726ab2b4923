#!/bin/sh
# docker-compose.yml mounts this into the postgres service's /docker-entrypoint-initdb.d: it runs once, when
# the container initialises an empty volume. It lets the `replica` service (the `replica` profile) stream
# WAL over the compose network as postgres, with its password; initdb's own replication lines cover only
# connections from the container itself. A volume made before this file existed needs the line added by
# hand once (docs/operations.md, "Read replicas").
echo "host replication postgres samenet scram-sha-256" >> "$PGDATA/pg_hba.conf"
