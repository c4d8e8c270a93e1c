#!/usr/bin/env bash
# Prints the bin directory of a Go at least as new as go.mod asks for, so
# that the Makefile and .ci/run can put it first on PATH. A Go on PATH (or
# in /usr/local/go) that is new enough is used as it is; otherwise the
# official toolchain is fetched once, as the module
# golang.org/toolchain@v0.0.1-go<version>.<os>-<arch>, from the Go module
# proxy (GOPROXY, as `go env` or the environment names it) into
# $AFTEROK_TOOLCHAIN_DIR (default ./var/toolchain).
#
# This is what Go 1.21+ does by itself when GOTOOLCHAIN allows it; it is
# done here with curl because Debian's golang-go (1.19) cannot even read
# go.mod's version, and a fresh machine may have no Go at all. The unpacked
# tree is checked against the checksum database's h1: hash before use.
# Messages go to stderr; stdout carries only the directory.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

say() { echo "toolchain: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

# go.mod's `go` line, or its `toolchain` line when that is newer. Since Go
# 1.21 "go 1.N" means the release 1.N.0.
wanted_version() {
  local go tc v
  go=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$repo/go.mod")
  tc=$(sed -n 's/^toolchain go\([0-9.]*\)$/\1/p' "$repo/go.mod")
  v=$(printf '%s\n' "$go" "$tc" | sed '/^$/d' | sort -V | tail -1)
  if [[ $v =~ ^1\.([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -ge 21 ]; then v="$v.0"; fi
  echo "$v"
}

# version_ok GO WANT: GO runs and reports a version >= WANT. Asked from /
# with GOTOOLCHAIN=local so that neither go.mod nor a toolchain switch
# answers instead of the binary itself.
version_ok() {
  local have
  have=$(cd / && GOTOOLCHAIN=local "$1" env GOVERSION 2>/dev/null) || return 1
  have=${have#go}
  [ -n "$have" ] && [ "$(printf '%s\n' "$2" "$have" | sort -V | head -1)" = "$2" ]
}

platform() {
  local os arch
  case "$(uname -s)" in Linux) os=linux ;; Darwin) os=darwin ;; FreeBSD) os=freebsd ;; *) os=$(uname -s | tr A-Z a-z) ;; esac
  case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    armv6l | armv7l) arch=armv6l ;;
    i386 | i686) arch=386 ;;
    *) arch=$(uname -m) ;;
  esac
  echo "$os-$arch"
}

goenv() { # NAME DEFAULT: the environment, else a Go on PATH, else Go's default
  local v=${!1:-}
  if [ -z "$v" ] && command -v go >/dev/null; then v=$(cd / && GOTOOLCHAIN=local go env "$1" 2>/dev/null || true); fi
  echo "${v:-$2}"
}

# The first proxy URL of GOPROXY ("direct" and "off" fetch no zip).
proxy_url() {
  local p
  for p in $(goenv GOPROXY https://proxy.golang.org,direct | tr ',|' '  '); do
    case "$p" in direct | off) ;; *) echo "${p%/}"; return 0 ;; esac
  done
  return 1
}

need_tools() {
  local missing=() t
  for t in curl unzip sha256sum base64; do command -v "$t" >/dev/null || missing+=("$t"); done
  [ ${#missing[@]} = 0 ] && return 0
  say "installing ${missing[*]} from Debian's packages"
  command -v apt-get >/dev/null || { say "need ${missing[*]}"; return 1; }
  as_root apt-get update -qq >&2 &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl unzip ca-certificates coreutils >/dev/null
}

# h1 DIR: the module hash (golang.org/x/mod/sumdb/dirhash Hash1) of the
# files under DIR, named relative to it: SHA-256 over the sorted lines
# "<sha256 hex>  <name>\n", which is exactly what sha256sum prints.
h1() {
  local hex
  hex=$(cd "$1" && find . -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)
  printf "h1:%s\n" "$(printf "$(echo "$hex" | sed 's/../\\x&/g')" | base64)"
}

# The hash the checksum database records for MODULE@VERSION, through the
# proxy when it serves the database (as the go command asks it), else from
# the database itself.
sumdb_hash() {
  local proxy=$1 mod=$2 ver=$3 db lines
  db=$(goenv GOSUMDB sum.golang.org)
  db=${db%% *}
  db=${db%%+*}
  [ "$db" = off ] && { echo off; return 0; }
  lines=$(curl -fsS --netrc-optional "$proxy/sumdb/$db/lookup/$mod@$ver" 2>/dev/null ||
    curl -fsS --netrc-optional "https://$db/lookup/$mod@$ver") || return 1
  echo "$lines" | awk -v m="$mod" -v v="$ver" '$1 == m && $2 == v { print $3; exit }'
}

fetch() { # VERSION DIR
  local ver mod=golang.org/toolchain dir=$2 proxy zip tmp
  ver="v0.0.1-go$1.$(platform)"
  proxy=$(proxy_url) || { say "GOPROXY names no proxy to fetch $mod@$ver from"; return 1; }
  need_tools || return 1
  mkdir -p "$dir"
  zip="$dir/go$1.$(platform).zip"
  if [ ! -s "$zip" ]; then
    say "fetching $mod@$ver from the Go module proxy"
    # A name of its own, so that two makes fetching at once do not mix.
    curl -fsSL --netrc-optional -o "$zip.$$" "$proxy/$mod/@v/$ver.zip" || { rm -f "$zip.$$"; return 1; }
    mv "$zip.$$" "$zip"
  fi
  tmp=$(mktemp -d "$dir/.unpack.XXXXXX")
  if ! unpack "$zip" "$tmp" "$proxy" "$mod" "$ver"; then rm -rf "$tmp"; return 1; fi
  rm -rf "$dir/go$1.$(platform)"
  mv "$tmp/$mod@$ver" "$dir/go$1.$(platform)"
  rm -rf "$tmp"
}

unpack() { # ZIP DIR PROXY MODULE VERSION
  local zip=$1 tmp=$2 want got
  unzip -q "$zip" -d "$tmp" || { rm -f "$zip"; say "broken zip $zip removed"; return 1; }
  want=$(sumdb_hash "$3" "$4" "$5") || { say "no checksum for $4@$5"; return 1; }
  if [ "$want" = off ]; then
    say "GOSUMDB=off: $4@$5 not checked"
  else
    got=$(h1 "$tmp")
    if [ "$got" != "$want" ]; then
      rm -f "$zip"
      say "$4@$5 hashes to $got, the checksum database says $want: removed"
      return 1
    fi
  fi
  # Module zips need not carry file modes (the go command sets them too).
  chmod -R a+rX "$tmp" && chmod a+x "$tmp/$4@$5"/bin/* "$tmp/$4@$5"/pkg/tool/*/*
}

main() {
  local want dir go have
  want=$(wanted_version)
  [ -n "$want" ] || { say "no go version in $repo/go.mod"; exit 1; }
  for go in "$(command -v go || true)" /usr/local/go/bin/go; do
    if [ -n "$go" ] && version_ok "$go" "$want"; then dirname "$go"; return 0; fi
  done
  dir=${AFTEROK_TOOLCHAIN_DIR:-$repo/var/toolchain}
  go="$dir/go$want.$(platform)/bin/go"
  if ! version_ok "$go" "$want"; then
    have=$(command -v go >/dev/null && (cd / && GOTOOLCHAIN=local go version 2>/dev/null) || echo "no Go")
    say "go.mod asks for go$want, this machine has ${have}"
    fetch "$want" "$dir" || { say "could not fetch go$want; install Go $want and put it on PATH"; exit 1; }
    version_ok "$go" "$want" || { say "the fetched $go does not run"; exit 1; }
    say "using $go"
  fi
  dirname "$go"
}

main "$@"
