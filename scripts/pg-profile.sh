#!/usr/bin/env bash
# Where PostgreSQL's time goes during an end-to-end run: starts a throwaway
# PostgreSQL cluster of its own (so no other database's work is counted)
# with pg_stat_statements loaded and the machine server's settings
# otherwise, runs scripts/bench-e2e.sh against it, and prints the
# statements by total execution time, WAL and the tables' sizes per message.
# Usage: scripts/pg-profile.sh [label] [bench flags...]
#   e.g. scripts/pg-profile.sh profile --messages 30000 --order-size 100 --clients 8
set -euo pipefail
cd "$(dirname "$0")/.."
label=${1:-profile}; shift || true
bindir=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
dir=$(mktemp -d); chmod 755 "$dir"; port=$((55000 + RANDOM % 400))
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$dir"
as_pg "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
cleanup() { as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-p $port -k $dir -c listen_addresses=127.0.0.1 \
  -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all -c autovacuum=off \
  -c max_connections=200" start >/dev/null
admin="postgres://postgres@127.0.0.1:$port/postgres"
psql -q "$admin" -c "CREATE EXTENSION pg_stat_statements"
# The bench creates its database in this cluster; statements are counted
# from the first POST's neighbourhood (reset just before the run starts).
psql -q "$admin" -c "SELECT pg_stat_statements_reset(); SELECT pg_stat_reset_shared('wal')" >/dev/null
ADMIN_URL=$admin OUT=${OUT:-var/bench} scripts/bench-e2e.sh "$label" "$@"
echo "# PostgreSQL statements by total time (all databases of this throwaway cluster)"
psql -q "$admin" -c "SELECT round(total_exec_time::numeric/1000, 2) AS total_s,
  round((100 * total_exec_time / sum(total_exec_time) OVER ())::numeric, 1) AS pct, calls,
  round((total_exec_time / calls)::numeric, 3) AS ms_per_call, rows,
  left(regexp_replace(query, '\s+', ' ', 'g'), 90) AS query
FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 25"
psql -q "$admin" -c "SELECT pg_size_pretty(wal_bytes) AS wal, wal_records FROM pg_stat_wal"
