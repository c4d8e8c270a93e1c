#!/usr/bin/env bash
# CI step: what `make run` meets on a machine that is not this one.
#  1. No Go: in a private mount namespace that hides /usr/local/go and every
#     go on PATH, with an empty HOME, .ci/toolchain.sh must fetch, check and
#     unpack the toolchain go.mod asks for into a temp dir (the zip is kept
#     in var/cache so a rerun in this clone does not download it again).
#  2. A freshly installed PostgreSQL: a throwaway cluster on a free port with
#     Debian's default authentication (peer on the socket, scram-sha-256 on
#     TCP, no role but postgres), where the default DATABASE_URL fails.
#  3. `make run` with that toolchain against that cluster (services.sh makes
#     the role; the API and simulator on free ports, data in the temp dir)
#     until /readyz answers; an account from `afterok accounts create
#     --json`; one order, polled until its message is delivered.
#  4. services.sh changes nothing once a login works, on that cluster and on
#     the machine's own, and never alters a role it did not make.
# Everything it starts (the cluster, make run) it stops; it touches no
# shared service. Needs root (initdb runs as the postgres user, the mount
# namespace needs CAP_SYS_ADMIN); elsewhere it skips, except under CI.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
passed=0

say() { echo "freshmachine: $*"; }
ok() { passed=$((passed + 1)); say "ok   $* (${SECONDS}s)"; }
fail() {
  say "FAIL $*" >&2
  for f in "${tmp:-/nonexistent}"/run.log "${tmp:-/nonexistent}"/pg/log; do
    [ -f "$f" ] && { echo "--- $f" >&2; tail -40 "$f" >&2; }
  done
  say "$passed passed, 1 failed" >&2
  exit 1
}
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { # below Linux's ephemeral range, where no connection takes it meanwhile
  local p
  for _ in $(seq 1 100); do
    p=$((20000 + RANDOM % 12000))
    listening "$p" || { echo "$p"; return 0; }
  done
  return 1
}
# poll SECONDS CMD…: CMD succeeds before the deadline.
poll() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

if [ "$(id -u)" != 0 ] || ! id postgres >/dev/null 2>&1; then
  [ "${CI:-}" = true ] && fail "needs root and a postgres user (.ci/services.sh installs PostgreSQL)"
  say "skipped: needs root and a postgres user"
  exit 0
fi

tmp=$(mktemp -d /tmp/afterok-fresh.XXXXXX)
chmod 755 "$tmp"
run_pid=
pgbin=
cleanup() {
  if [ -n "$run_pid" ]; then
    kill -TERM -- "-$run_pid" 2>/dev/null || true
    wait "$run_pid" 2>/dev/null || true
  fi
  if [ -n "$pgbin" ] && [ -f "$tmp/pg/postmaster.pid" ]; then
    (cd / && runuser -u postgres -- "$pgbin/pg_ctl" -D "$tmp/pg" -m immediate -w stop >/dev/null 2>&1) || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# --- 1. a machine without Go -------------------------------------------------
want=$(sed -n 's/^go \([0-9.]*\)$/\1/p' go.mod)
mkdir -p "$tmp/home" "$tmp/toolchain" "$tmp/empty" var/cache
cp var/cache/go*.zip "$tmp/toolchain/" 2>/dev/null || true
hide=(/usr/local/go)
for g in $(PATH=/usr/sbin:/usr/bin:/sbin:/bin type -ap go || true); do hide+=("$g"); done
mounts=""
for h in "${hide[@]}"; do
  [ -e "$h" ] || continue
  if [ -d "$h" ]; then mounts+="mount --bind $tmp/empty $h && "; else mounts+="mount --bind /dev/null $h && "; fi
done
# GOPROXY and GOSUMDB as this machine's Go has them (a fresh machine gets
# Go's defaults, which is what the script falls back to without a Go).
proxy=${GOPROXY:-$(go env GOPROXY 2>/dev/null || true)}
sumdb=${GOSUMDB:-$(go env GOSUMDB 2>/dev/null || true)}
gobin=$(unshare -m --propagation private env -i HOME="$tmp/home" PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  ${proxy:+GOPROXY="$proxy"} ${sumdb:+GOSUMDB="$sumdb"} AFTEROK_TOOLCHAIN_DIR="$tmp/toolchain" \
  bash -c "${mounts}! command -v go >/dev/null && [ ! -e /usr/local/go/bin/go ] && exec bash .ci/toolchain.sh") ||
  fail "toolchain.sh on a machine without Go"
[[ $gobin == "$tmp/toolchain/"* ]] || fail "toolchain.sh chose $gobin, not a toolchain it fetched"
"$gobin/go" version | grep -q "go$want " || fail "the fetched toolchain is not go$want: $("$gobin/go" version)"
cp "$tmp"/toolchain/go*.zip var/cache/ 2>/dev/null || true
ok "no Go on the machine: toolchain.sh fetched and checked go$want into $gobin"

# Debian's golang-go first on PATH (1.19 on bookworm: it cannot even parse
# go.mod): the fetched toolchain must win. Its .deb is unpacked, not
# installed, and cached in var/cache; without apt it is skipped.
deb=$(ls var/cache/golang-*-go_*.deb 2>/dev/null | tail -1 || true)
if [ -z "$deb" ] && command -v apt-get >/dev/null; then
  pkg=$(apt-cache depends golang-go 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^golang-1\.[0-9]+-go$/ && !n++ { print $2 }')
  [ -n "$pkg" ] && (cd var/cache && apt-get download -qq "$pkg" >/dev/null 2>&1) || true
  deb=$(ls var/cache/golang-*-go_*.deb 2>/dev/null | tail -1 || true)
fi
if [ -n "$deb" ]; then
  dpkg-deb -x "$deb" "$tmp/debian"
  oldgo=$(ls -d "$tmp"/debian/usr/lib/go-*/bin | tail -1)
  got=$(unshare -m --propagation private env -i HOME="$tmp/home" PATH="$oldgo:/usr/sbin:/usr/bin:/sbin:/bin" \
    ${proxy:+GOPROXY="$proxy"} ${sumdb:+GOSUMDB="$sumdb"} AFTEROK_TOOLCHAIN_DIR="$tmp/toolchain" \
    bash -c "${mounts}exec bash .ci/toolchain.sh") || fail "toolchain.sh with $(basename "$deb") on PATH"
  [ "$got" = "$gobin" ] || fail "toolchain.sh chose $got over the fetched toolchain, with Debian's $("$oldgo/go" version) on PATH"
  ok "with Debian's $("$oldgo/go" env GOVERSION) first on PATH, toolchain.sh still takes go$want"
else
  say "skip Debian's golang-go on PATH: no .deb to be had"
fi

# A proxy whose checksum database disagrees with the zip: refused, nothing kept.
plat=$(basename "$(dirname "$gobin")")
plat=${plat#go"$want".}
mod=golang.org/toolchain ver=v0.0.1-go$want.$plat
mkdir -p "$tmp/proxy/$mod/@v" "$(dirname "$tmp/proxy/sumdb/sum.golang.org/lookup/$mod@$ver")" "$tmp/bad"
ln -s "$repo/var/cache/go$want.$plat.zip" "$tmp/proxy/$mod/@v/$ver.zip"
echo "$mod $ver h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" >"$tmp/proxy/sumdb/sum.golang.org/lookup/$mod@$ver"
if env -u GOPROXY -u GOSUMDB GOPROXY="file://$tmp/proxy" GOSUMDB=sum.golang.org AFTEROK_TOOLCHAIN_DIR="$tmp/bad" \
  PATH=/usr/sbin:/usr/bin:/sbin:/bin unshare -m --propagation private bash -c "${mounts}exec bash .ci/toolchain.sh" \
  >/dev/null 2>"$tmp/bad.log"; then
  fail "toolchain.sh used a toolchain whose hash the checksum database does not list"
fi
grep -q "the checksum database says" "$tmp/bad.log" || fail "toolchain.sh failed, but not on the hash: $(cat "$tmp/bad.log")"
[ -z "$(ls -A "$tmp/bad")" ] || fail "toolchain.sh kept a toolchain it refused: $(ls -A "$tmp/bad")"
ok "a toolchain zip that does not match the checksum database is refused and removed"

# --- 2. a freshly installed PostgreSQL --------------------------------------
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
port=$(free_port) || fail "no free port"
mkdir -p "$tmp/pg" "$tmp/sock" && chown postgres "$tmp/pg" "$tmp/sock"
(cd / && runuser -u postgres -- "$pgbin/initdb" -D "$tmp/pg" -U postgres \
  --auth-local=peer --auth-host=scram-sha-256 >/dev/null) || fail "initdb"
(cd / && runuser -u postgres -- "$pgbin/pg_ctl" -D "$tmp/pg" -l "$tmp/pg/log" -w \
  -o "-p $port -k $tmp/sock -c listen_addresses=localhost" start >/dev/null) || fail "pg_ctl start"
export AFTEROK_PG_PORT=$port AFTEROK_PG_SOCKET_DIR=$tmp/sock AFTEROK_DATABASE_URL_FILE=$tmp/database_url
unset DATABASE_URL AFTEROK_TEST_DATABASE_URL NATS_URL
# shellcheck source=services.sh
source .ci/services.sh
set +e # services.sh set -e for itself; this script checks each result
pg_logs_in "postgres://localhost:$port/afterok?sslmode=disable" &&
  fail "the default DATABASE_URL logs in to the Debian-default cluster: it is not fresh"
ok "a Debian-default cluster on port $port refuses the default DATABASE_URL"

# --- 3. make run against it ---------------------------------------------------
api=127.0.0.1:$(free_port) sim=127.0.0.1:$(free_port)
setsid env PATH="$gobin:/usr/sbin:/usr/bin:/sbin:/bin" AFTEROK_ADDR="$api" AFTEROK_SIM_ADDR="$sim" \
  AFTEROK_DATA_DIR="$tmp/data" make run >"$tmp/run.log" 2>&1 &
run_pid=$!
ready() {
  kill -0 "$run_pid" 2>/dev/null || fail "make run exited"
  curl -fsS "http://$api/readyz" >/dev/null 2>&1
}
poll 300 ready || fail "/readyz did not answer"
grep -q "role $(id -un) made" "$tmp/run.log" || fail "make run did not make the role"
[ "$(stat -c %a "$tmp/database_url")" = 600 ] || fail "$tmp/database_url is readable by others"
ok "make run made a role, built with go$want and is ready on $api"

url=$(cat "$tmp/database_url")
acct=$(DATABASE_URL=$url bin/afterok accounts create --name Fresh --credit 10 --json) || fail "accounts create"
key=$(echo "$acct" | sed -nE 's/.*"api_key" *: *"([^"]+)".*/\1/p')
[ -n "$key" ] || fail "no api_key in $acct"
order=$(curl -fsS "http://$api/v1/orders" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d '{"to":["+4915112345678"],"body":"Hello from a fresh machine"}') || fail "POST /v1/orders"
msg=$(echo "$order" | sed -nE 's/.*"message_id" *: *"([^"]+)".*/\1/p')
[ -n "$msg" ] || fail "no message_id in $order"
delivered() {
  curl -fsS "http://$api/v1/messages/$msg" -H "Authorization: Bearer $key" 2>/dev/null | grep -q '"state" *: *"delivered"'
}
poll 60 delivered || fail "message $msg not delivered: $(curl -sS "http://$api/v1/messages/$msg" -H "Authorization: Bearer $key")"
ok "an account from accounts create --json; its order's message $msg was delivered"
# SIGTERM to afterok alone (make would die of it too): make run then
# returns afterok's own exit status.
dev_pid=
for st in /proc/[0-9]*/stat; do # no procps needed: pid (comm) state ppid pgrp
  read -r pid comm _ _ pgrp _ <"$st" 2>/dev/null || continue
  if [ "$comm" = "(afterok)" ] && [ "$pgrp" = "$run_pid" ]; then dev_pid=$pid; fi
done
[ -n "$dev_pid" ] || fail "no afterok process under make run"
kill -TERM "$dev_pid"
wait "$run_pid"
rc=$?
run_pid=
[ "$rc" = 0 ] || fail "make run exited $rc after SIGTERM to afterok"
ok "afterok dev stopped cleanly on SIGTERM"

# --- 4. what works is left alone ----------------------------------------------
pg_ensure_access >/dev/null || fail "pg_ensure_access a second time"
[ "$(cat "$tmp/database_url")" = "$url" ] || fail "a second run changed the login"
if pg_logs_in "postgres://localhost:5432/afterok?sslmode=disable"; then
  (PG_PORT=5432 AFTEROK_DATABASE_URL_FILE=$tmp/untouched pg_ensure_access >/dev/null) || fail "on the machine's cluster"
  [ ! -e "$tmp/untouched" ] || fail "services.sh wrote a login for a cluster that already let us in"
fi
# The login file lost (a fresh clone): the role it made gets a new password.
mv "$tmp/database_url" "$tmp/old_url"
pg_ensure_access >/dev/null || fail "pg_ensure_access without its login file"
url=$(cat "$tmp/database_url")
[ "$url" != "$(cat "$tmp/old_url")" ] && pg_logs_in "$url" || fail "no new working login for its own role"
as_postgres psql -w -X -q -h "$tmp/sock" -p "$port" -d postgres -c "COMMENT ON ROLE \"$(id -un)\" IS NULL" ||
  fail "clear the role's comment"
rm "$tmp/database_url"
pg_ensure_access >/dev/null 2>&1 && fail "services.sh took over a role it did not make"
pg_logs_in "$url" || fail "services.sh changed the password of a role it did not make"
ok "a working login is kept; the machine's cluster and a role someone else made are not changed"

say "$passed passed, 0 failed"
