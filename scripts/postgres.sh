#!/usr/bin/env bash
# A local PostgreSQL for the store tests: installs the Debian packages if needed, starts a private cluster
# (its own data directory, socket and port, trust auth on localhost only) and creates the test database.
# Idempotent: a second run finds the cluster running and only prints the URL. Prints one line on stdout:
# the SQLAlchemy URL (for L2M_TEST_POSTGRES_URL); everything else goes to stderr.
#   L2M_PG_DIR   cluster directory (default /tmp/l2m-postgres)
#   L2M_PG_PORT  TCP port on 127.0.0.1 (default 55432)
#   L2M_PG_DB    database name (default l2m_test)
#   scripts/postgres.sh stop   stops the cluster
set -euo pipefail

DIR=${L2M_PG_DIR:-/tmp/l2m-postgres}
PORT=${L2M_PG_PORT:-55432}
DB=${L2M_PG_DB:-l2m_test}
DATA=$DIR/data

log() { echo "postgres.sh: $*" >&2; }

bindir() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  if [ -z "$found" ] && command -v pg_ctl >/dev/null; then found=$(dirname "$(command -v pg_ctl)"); fi
  echo "$found"
}

BIN=$(bindir)
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
  [ "$(id -u)" -eq 0 ] || { log "PostgreSQL is not installed; run as root or: apt-get install -y postgresql"; exit 1; }
  log "installing PostgreSQL (Debian packages) ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  BIN=$(bindir)
fi

# The server refuses to run as root: as root, the cluster belongs to the `postgres` user the package made.
if [ "$(id -u)" -eq 0 ]; then
  OWNER=postgres
  as_owner() { runuser -u "$OWNER" -- "$@"; }
else
  OWNER=$(id -un)
  as_owner() { "$@"; }
fi

if [ "${1:-}" = "stop" ]; then
  if [ -f "$DATA/postmaster.pid" ]; then as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2; fi
  exit 0
fi

mkdir -p "$DIR"
chown "$OWNER" "$DIR"
chmod 700 "$DIR"
if [ ! -f "$DATA/PG_VERSION" ]; then
  log "creating a cluster in $DATA"
  rm -rf "$DATA"
  as_owner "$BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --no-locale >/dev/null
fi
if ! as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  log "starting the server on 127.0.0.1:$PORT"
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 \
    -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DIR -c fsync=off -c max_connections=200" start >/dev/null
fi
exists=$(as_owner "$BIN/psql" -h "$DIR" -p "$PORT" -U postgres -d postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = '$DB'")
if [ "$exists" != "1" ]; then
  as_owner "$BIN/createdb" -h "$DIR" -p "$PORT" -U postgres "$DB"
fi
echo "postgresql+psycopg://postgres@127.0.0.1:$PORT/$DB"
