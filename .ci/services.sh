#!/usr/bin/env bash
# Starts what `make test` and `make run` need when it is not already running:
# PostgreSQL on 127.0.0.1:5432 and (when available) NATS with JetStream on
# 127.0.0.1:4222. Idempotent; prints what it did. Defaults: README.md, Configuration.
set -euo pipefail
cd "$(dirname "$0")/.."

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { # port seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do listening "$1" && return 0; sleep 0.1; done
  return 1
}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

start_postgres() {
  if ls /etc/postgresql/*/main >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null; then
    echo "services: starting the system PostgreSQL cluster"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
    wait_for 5432 30 && return 0
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
  local data="$PWD/var/pgdata"
  echo "services: starting a throwaway PostgreSQL cluster in $data"
  mkdir -p var && as_root chown postgres "$PWD/var" 2>/dev/null || true
  if [ ! -f "$data/PG_VERSION" ]; then
    as_root -u postgres "$bin/initdb" -D "$data" -A trust -U postgres >/dev/null 2>&1 ||
      as_root su postgres -c "$bin/initdb -D '$data' -A trust -U postgres" >/dev/null
  fi
  as_root su postgres -c "$bin/pg_ctl -D '$data' -l '$data/log' -o '-p 5432 -k /tmp -c listen_addresses=127.0.0.1' -w start" >/dev/null
  wait_for 5432 30
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DO \$\$ BEGIN CREATE ROLE root SUPERUSER LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" || true
}

if listening 5432; then
  echo "services: PostgreSQL is listening on 127.0.0.1:5432"
else
  start_postgres
  listening 5432 || { echo "services: could not start PostgreSQL" >&2; exit 1; }
fi

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
