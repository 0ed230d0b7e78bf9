#!/usr/bin/env bash
# install-chdb.sh: installs libchdb.so (chDB, ClickHouse 26.7 embedded) for
# `make compat` into $CHDB_LIB_TARGET (default <repo>/.cache/chdb/libchdb.so),
# from the npm package @chdb/lib-linux-x64-gnu, checked by sha256.
# Idempotent; a fast no-op when the library is present (its size and the
# stamp of a verified install are checked, not its 566 MB hash).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

CHDB_PACKAGE=@chdb/lib-linux-x64-gnu
CHDB_VERSION=26.7.3-stable.1
CHDB_TGZ_SHA256=c0d32b129e988f2b9a9a31c9141aecf5e1e2453f9a079efc4d36ab8e3f92b2ad
CHDB_SHA256=36ad4e999882821ef13cf2d0f52c93f48e6ee1b4498b35a201c23ce4b8d15bf5
CHDB_SIZE=566330096
CHDB_MEMBER=package/libchdb.so
CHDB_LIB_TARGET="${CHDB_LIB_TARGET:-$repo_root/.cache/chdb/libchdb.so}"
stamp="$CHDB_LIB_TARGET.$CHDB_VERSION.sha256"

log() { printf 'install-chdb: %s\n' "$*" >&2; }

if [ -f "$CHDB_LIB_TARGET" ] && [ "$(stat -c %s "$CHDB_LIB_TARGET")" = "$CHDB_SIZE" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$CHDB_SHA256" ]; then
	exit 0
fi

log "fetching $CHDB_PACKAGE@$CHDB_VERSION from npm (178 MB) into $CHDB_LIB_TARGET"
dir="$(dirname "$CHDB_LIB_TARGET")"
mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.install.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$CHDB_PACKAGE@$CHDB_VERSION" >/dev/null)
tarball="$(ls "$tmp"/chdb-lib-linux-x64-gnu-*.tgz)"
got="$(sha256sum "$tarball" | cut -d' ' -f1)"
if [ "$got" != "$CHDB_TGZ_SHA256" ]; then
	log "sha256 mismatch for $(basename "$tarball"): got $got, want $CHDB_TGZ_SHA256"
	exit 1
fi
tar -xzf "$tarball" -C "$tmp" "$CHDB_MEMBER"
rm -f "$tarball"
got="$(sha256sum "$tmp/$CHDB_MEMBER" | cut -d' ' -f1)"
if [ "$got" != "$CHDB_SHA256" ]; then
	log "sha256 mismatch for $CHDB_MEMBER: got $got, want $CHDB_SHA256"
	exit 1
fi
# Atomic replace: a test loading the library meanwhile never sees half of it.
mv -f "$tmp/$CHDB_MEMBER" "$CHDB_LIB_TARGET"
echo "$CHDB_SHA256" >"$stamp"
log "installed $CHDB_LIB_TARGET"
