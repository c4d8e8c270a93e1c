#!/usr/bin/env bash
# Starts what `make test` and `make run` need when it is not already running:
# PostgreSQL on 127.0.0.1:5432 and (when available) NATS with JetStream on
# 127.0.0.1:4222. Idempotent; prints what it did. Defaults: README.md, Configuration.
#
# A PostgreSQL that does not let this user in as the default DATABASE_URL
# does (a fresh Debian install: peer auth on the socket, scram-sha-256 on
# TCP, no role but postgres) gets a login role for this user with a random
# password, made as the postgres OS user over the socket; its URL is written
# to var/database_url, which the Makefile exports as DATABASE_URL. A cluster
# that already lets us in, or a DATABASE_URL set in the environment, is
# never changed. Sourced (by .ci/freshmachine.sh) it only defines functions;
# AFTEROK_PG_PORT, AFTEROK_PG_SOCKET_DIR and AFTEROK_DATABASE_URL_FILE point
# it at another cluster.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_PORT=${AFTEROK_PG_PORT:-5432}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { # port seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do listening "$1" && return 0; sleep 0.1; done
  return 1
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
as_postgres() { # from /, which the postgres user can read
  if [ "$(id -un)" = postgres ]; then (cd / && "$@")
  elif [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@")
  elif [ -t 2 ]; then (cd / && sudo -u postgres "$@") # a person at a terminal can type a password
  else (cd / && sudo -n -u postgres "$@"); fi
}
# psql_path: the psql on PATH, else the newest server's (binaries only).
psql_path() {
  type -P psql || ls -d /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -1 || true
}
psql() { "$(psql_path)" "$@"; }

start_postgres() {
  if ls /etc/postgresql/*/main >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null; then
    echo "services: starting the system PostgreSQL cluster"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
    wait_for "$PG_PORT" 30 && return 0
  fi
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$bin" ]; then
    echo "services: installing PostgreSQL from Debian's packages"
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    if ls /etc/postgresql/*/main >/dev/null 2>&1; then start_postgres; return; fi
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  # Only the binaries: a throwaway cluster under ./var, run as postgres
  # because initdb refuses to run as root.
  local data="$repo/var/pgdata"
  echo "services: starting a throwaway PostgreSQL cluster in $data"
  mkdir -p "$repo/var" && as_root chown postgres "$repo/var" 2>/dev/null || true
  if [ ! -f "$data/PG_VERSION" ]; then
    as_postgres "$bin/initdb" -D "$data" -A trust -U postgres >/dev/null
  fi
  as_postgres "$bin/pg_ctl" -D "$data" -l "$data/log" -o "-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1" -w start >/dev/null
  wait_for "$PG_PORT" 30
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc "DO \$\$ BEGIN CREATE ROLE \"$(id -un)\" SUPERUSER LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" || true
}

# pg_url_for_admin URL: URL pointed at the server's postgres database, which
# always exists (the URL's own database is created by afterok on start).
pg_url_for_admin() {
  case "$1" in
    postgres://* | postgresql://*) echo "$1" | sed -E 's#^(postgres(ql)?://[^/?]*)(/[^?]*)?#\1/postgres#' ;;
    *) echo "$1 dbname=postgres" ;;
  esac
}

# pg_logs_in URL: psql gets in with URL, never prompting for a password.
pg_logs_in() {
  PGCONNECT_TIMEOUT=5 psql -w -X "$(pg_url_for_admin "$1")" -Atqc 'SELECT 1' </dev/null >/dev/null 2>&1
}

pg_role_marker="afterok: made by .ci/services.sh for a PostgreSQL that let this user in no other way"

# pg_ensure_access makes sure the Makefile has a DATABASE_URL that logs in,
# changing the cluster only when nothing else does.
pg_ensure_access() {
  local file=${AFTEROK_DATABASE_URL_FILE:-$repo/var/database_url}
  local k
  if [ -z "$(psql_path)" ]; then
    echo "services: no psql to check the PostgreSQL login with; DATABASE_URL left as it is"
    return 0
  fi
  for k in DATABASE_URL AFTEROK_TEST_DATABASE_URL; do
    [ -n "${!k:-}" ] || continue
    # Set by the user: theirs to fix (psql may also reject a pgx-only
    # parameter that afterok accepts), so only a warning.
    pg_logs_in "${!k}" || echo "services: psql cannot log in with $k from the environment; left as it is" >&2
    return 0
  done
  if [ -s "$file" ]; then
    if pg_logs_in "$(cat "$file")"; then
      echo "services: PostgreSQL login from $file"
      return 0
    fi
    echo "services: $file no longer logs in; removed"
    rm -f "$file"
  fi
  pg_logs_in "postgres://localhost:$PG_PORT/afterok?sslmode=disable" && return 0
  pg_create_role "$file"
}

# pg_create_role FILE: a login role for this OS user with CREATEDB (tests
# create a database each) and a random password, made by the postgres OS
# user over the Unix socket (peer authentication, Debian's default), and
# its URL in FILE. A role of that name that this script did not make is
# someone else's: refused, never altered.
pg_create_role() {
  local file=$1 user sock=${AFTEROK_PG_SOCKET_DIR:-/var/run/postgresql} owner pw url
  user=$(id -un)
  [[ $user =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "services: user name $user does not fit in a URL; set DATABASE_URL" >&2; return 1; }
  echo "services: PostgreSQL on port $PG_PORT does not let $user in; creating role $user as the postgres user"
  owner=$(as_postgres "$(psql_path)" -w -X -h "$sock" -p "$PG_PORT" -d postgres -Atq -v u="$user" \
    <<<"SELECT 'role:' || coalesce(shobj_description(oid, 'pg_authid'), '') FROM pg_roles WHERE rolname = :'u';" 2>&1) || {
    echo "services: cannot reach PostgreSQL as the postgres user over $sock ($owner); set DATABASE_URL" >&2
    return 1
  }
  if [ -n "$owner" ] && [ "$owner" != "role:$pg_role_marker" ]; then
    echo "services: PostgreSQL has a role $user that this script did not make and that cannot log in; set DATABASE_URL" >&2
    return 1
  fi
  pw=$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)
  # The password goes through stdin, never argv.
  as_postgres "$(psql_path)" -w -X -h "$sock" -p "$PG_PORT" -d postgres -q -v ON_ERROR_STOP=1 -v u="$user" -v marker="$pg_role_marker" >/dev/null <<SQL
\\set pw '$pw'
SELECT format('%s ROLE %I LOGIN CREATEDB PASSWORD %L',
  CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = :'u') THEN 'ALTER' ELSE 'CREATE' END, :'u', :'pw') \\gexec
COMMENT ON ROLE :"u" IS :'marker';
SQL
  url="postgres://$user:$pw@localhost:$PG_PORT/afterok?sslmode=disable"
  mkdir -p "$(dirname "$file")"
  (umask 077 && echo "$url" >"$file")
  pg_logs_in "$url" || { echo "services: role $user made, but it cannot log in over TCP; see pg_hba.conf" >&2; return 1; }
  echo "services: role $user made; its DATABASE_URL is in $file"
}

main() {
  cd "$repo"
  if listening "$PG_PORT"; then
    echo "services: PostgreSQL is listening on 127.0.0.1:$PG_PORT"
  else
    start_postgres
    listening "$PG_PORT" || { echo "services: could not start PostgreSQL" >&2; exit 1; }
  fi
  pg_ensure_access

  # NATS: afterok embeds a JetStream server when NATS_URL is unset, so an
  # external one is only needed for the second test pass; start it if the
  # machine has it.
  if listening 4222; then
    echo "services: NATS is listening on 127.0.0.1:4222"
  elif command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ]; then
    echo "services: starting NATS with JetStream"
    as_root mkdir -p /var/lib/nats-server
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
    wait_for 4222 15 || echo "services: NATS did not come up; the external-NATS pass will be skipped"
  else
    echo "services: no nats-server on this machine; the external-NATS pass will be skipped"
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
