#!/bin/sh
# The PostgreSQL container's entry point (Dockerfile.postgres): makes the cluster on first
# start, then runs the server as the postgres user in the foreground.
#
# First start (no $PGDATA/PG_VERSION): initdb (superuser postgres, peer on the socket,
# scram-sha-256 over TCP from anywhere on the container's networks), then a role and a
# database named rjob, the role's password $RJOB_PG_PASSWORD (default rjob; letters, digits
# and _ only, so it needs no quoting in SQL or a URL).
set -eu

bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
password=${RJOB_PG_PASSWORD:-rjob}
case $password in
  *[!A-Za-z0-9_]* | "") echo "rjob-postgres: RJOB_PG_PASSWORD: letters, digits and _ only" >&2; exit 2 ;;
esac
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"
  as_postgres "$bin/initdb" -D "$PGDATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  {
    echo "host all all 0.0.0.0/0 scram-sha-256"
    echo "host all all ::/0 scram-sha-256"
  } >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  # Set up on the socket only, then stopped: nobody reaches it half made.
  as_postgres "$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -k /tmp" -w start >/dev/null
  as_postgres "$bin/psql" -h /tmp -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE rjob LOGIN PASSWORD '$password'" \
    -c "CREATE DATABASE rjob OWNER rjob"
  as_postgres "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
  echo "rjob-postgres: cluster made in $PGDATA (database rjob, role rjob)" >&2
fi

exec setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -D "$PGDATA" -k /tmp
