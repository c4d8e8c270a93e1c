#!/usr/bin/env bash
# By hand, not in CI (about 4 minutes, most of it compiling): `make run` on a
# real minimal Debian (debootstrap --variant=minbase) with no Go, no curl
# and a freshly installed `postgresql`, from a clone of this repository's
# HEAD. Root only; everything lives in a temp dir and is removed.
#
# Phase 1 has the network: .ci/toolchain.sh installs curl and unzip and
# fetches the toolchain, apt installs make and postgresql (service starts
# blocked, as in a container), `make build` downloads the modules. Phase 2
# runs in a network namespace of its own, so the chroot's cluster gets port
# 5432 and its own loopback: `make run` (services.sh starts the cluster and
# makes the role), an account, one order, polled until delivered.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
[ "$(id -u)" = 0 ] || { echo "debian-chroot: needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null

top=$(mktemp -d /tmp/afterok-debian.XXXXXX)
root=$top/root
cleanup() {
  local p
  for p in /proc/[0-9]*; do # only processes inside this chroot
    [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill -KILL "${p#/proc/}" 2>/dev/null
  done
  umount "$root/proc" "$root/dev" 2>/dev/null || true
  rm -rf "$top"
}
trap cleanup EXIT
in_root() { chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bash -euc "$1"; }

echo "debian-chroot: debootstrap bookworm into $root"
debootstrap --variant=minbase bookworm "$root" >"$top/debootstrap.log" 2>&1
mount --bind /proc "$root/proc"
mount --bind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# Where egress passes a TLS-inspecting proxy, the machine trusts its CA:
# the chroot gets the same local CAs (installed with ca-certificates).
mkdir -p "$root/usr/local/share/ca-certificates"
cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod +x "$root/usr/sbin/policy-rc.d"
git clone -q "$repo" "$root/src"

echo "debian-chroot: phase 1 (network): toolchain, make, postgresql, build"
in_root 'cd /src && ! command -v go && ! command -v curl && bash .ci/toolchain.sh >/dev/null'
in_root 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make postgresql >/dev/null 2>&1'
# pg_createcluster chose another port if the host's 5432 was taken.
sed -i 's/^port = .*/port = 5432/' "$root"/etc/postgresql/*/main/postgresql.conf
in_root 'cd /src && make build >/dev/null'

echo "debian-chroot: phase 2 (own network namespace): make run, an order"
cat >"$root/check.sh" <<'EOF'
set -u
cd /src
setsid make run >/tmp/run.log 2>&1 &
pid=$!
fail() { echo "debian-chroot: FAIL $*" >&2; tail -30 /tmp/run.log >&2; exit 1; }
for _ in $(seq 1 300); do curl -fsS http://127.0.0.1:8080/readyz >/dev/null 2>&1 && break; sleep 0.2; done
grep '^services:' /tmp/run.log
grep -q "role root made" /tmp/run.log || fail "services.sh made no role"
key=$(DATABASE_URL=$(cat var/database_url) bin/afterok accounts create --name Fresh --credit 10 --json |
  sed -nE 's/.*"api_key" *: *"([^"]+)".*/\1/p')
[ -n "$key" ] || fail "accounts create"
order=$(curl -fsS http://127.0.0.1:8080/v1/orders -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d '{"to":["+4915112345678"],"body":"Hello from Debian"}') || fail "POST /v1/orders"
msg=$(echo "$order" | sed -nE 's/.*"message_id" *: *"([^"]+)".*/\1/p')
ok=
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:8080/v1/messages/$msg" -H "Authorization: Bearer $key" | grep -q '"state" *: *"delivered"' && { ok=1; break; }
  sleep 0.2
done
kill -TERM -- "-$pid"; wait "$pid" || true
pg_ctlcluster "$(ls /etc/postgresql)" main stop || true
[ -n "$ok" ] || fail "message $msg not delivered"
echo "debian-chroot: message $msg delivered"
EOF
unshare -n bash -c "ip link set lo up && chroot '$root' /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bash /check.sh"
echo "debian-chroot: 1 passed, 0 failed"
