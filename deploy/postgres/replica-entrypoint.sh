#!/bin/bash
# The `replica` profile's standby (docker-compose.yml, service postgres-replica): a streaming replica of
# the compose primary. On an empty volume it makes the replication role on the primary if it is missing
# (idempotent, so a primary volume made before this profile existed works too) and takes a base backup
# with -R (standby.signal and primary_conninfo); then it runs postgres as a hot standby. Runs as the
# image's postgres user.
set -euo pipefail

: "${PRIMARY_HOST:?}" "${PRIMARY_SUPERUSER_URL:?}" "${REPLICATION_USER:?}" "${REPLICATION_PASSWORD:?}" "${PGDATA:?}"

until pg_isready -q -h "$PRIMARY_HOST" -p 5432; do
  echo "replica: waiting for the primary at $PRIMARY_HOST:5432"
  sleep 1
done

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  psql "$PRIMARY_SUPERUSER_URL" -v ON_ERROR_STOP=1 -q -v user="$REPLICATION_USER" -v password="$REPLICATION_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I WITH REPLICATION LOGIN PASSWORD %L', :'user', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'user') \gexec
SQL
  mkdir -p "$PGDATA"
  chmod 0700 "$PGDATA"
  echo "replica: base backup of $PRIMARY_HOST into $PGDATA"
  PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup -h "$PRIMARY_HOST" -p 5432 -U "$REPLICATION_USER" -D "$PGDATA" -R -X stream -c fast
fi

exec postgres -D "$PGDATA" -c hot_standby=on
