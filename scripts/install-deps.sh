#!/usr/bin/env bash
# install-deps.sh: installs what the build, `make run` and the integration
# tests need and is missing, on Debian 12 with Go. Idempotent; a fast no-op
# when everything is present.
#
#   apt:  redis-server, clickhouse-server, clickhouse-client (18.16), tzdata,
#         gcc (cgo for ONNX Runtime), npm (and node), chromium (browser tests);
#         with DEPS_ZOOKEEPER=1 also zookeeper (and Java: make test-chcluster)
#   npm:  web/node_modules from web/package-lock.json (npm ci, again when the
#         lock file is newer than the install)
#   ORT:  libonnxruntime.so.1 from npm onnxruntime-node@1.24.1, checked by sha256,
#         into $ORT_LIB_TARGET (default <repo>/.cache/onnxruntime/libonnxruntime.so.1.24.1)
#
# `apt-get update` runs only when something must be installed; sudo is used
# only when not root.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

ORT_VERSION=1.24.1
ORT_SHA256=53ef1ac028dd1b05554b8da28d9159eb3876f99868193d2aaa6e67f0243c23d4
ORT_MEMBER=package/bin/napi-v6/linux/x64/libonnxruntime.so.1
ORT_LIB_TARGET="${ORT_LIB_TARGET:-$repo_root/.cache/onnxruntime/libonnxruntime.so.$ORT_VERSION}"

log() { printf 'install-deps: %s\n' "$*" >&2; }

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		log "need root for: $*  (no sudo found)"
		return 1
	fi
}

pkg_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

apt_updated=0
apt_install() {
	if [ "$apt_updated" -eq 0 ]; then
		log "apt-get update"
		as_root apt-get update -qq
		apt_updated=1
	fi
	log "apt-get install $*"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

ort_ok() {
	[ -f "$ORT_LIB_TARGET" ] &&
		[ "$(sha256sum "$ORT_LIB_TARGET" | cut -d' ' -f1)" = "$ORT_SHA256" ]
}

# --- apt packages ------------------------------------------------------------
missing=()
for pkg in redis-server clickhouse-server clickhouse-client tzdata; do
	pkg_installed "$pkg" || missing+=("$pkg")
done
if [ "${DEPS_ZOOKEEPER:-0}" = 1 ]; then
	pkg_installed zookeeper || missing+=(zookeeper)
fi
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
	apt_install "${missing[@]}"
fi

# --- ONNX Runtime shared library ---------------------------------------------
if ! ort_ok; then
	log "fetching onnxruntime-node@$ORT_VERSION from npm into $ORT_LIB_TARGET"
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && npm pack --silent "onnxruntime-node@$ORT_VERSION" >/dev/null)
	tarball="$(ls "$tmp"/onnxruntime-node-*.tgz)"
	tar -xzf "$tarball" -C "$tmp" "$ORT_MEMBER"
	got="$(sha256sum "$tmp/$ORT_MEMBER" | cut -d' ' -f1)"
	if [ "$got" != "$ORT_SHA256" ]; then
		log "sha256 mismatch for $ORT_MEMBER: got $got, want $ORT_SHA256"
		exit 1
	fi
	mkdir -p "$(dirname "$ORT_LIB_TARGET")"
	# Atomic replace: a test running meanwhile never sees half a library.
	cp "$tmp/$ORT_MEMBER" "$ORT_LIB_TARGET.tmp.$$"
	mv -f "$ORT_LIB_TARGET.tmp.$$" "$ORT_LIB_TARGET"
	log "installed $ORT_LIB_TARGET"
fi

# --- npm packages of the web front end --------------------------------------
web="$repo_root/web"
if [ -f "$web/package-lock.json" ] &&
	{ [ ! -f "$web/node_modules/.package-lock.json" ] || [ "$web/package-lock.json" -nt "$web/node_modules/.package-lock.json" ]; }; then
	log "npm ci in web/"
	(cd "$web" && npm ci --no-audit --no-fund --loglevel=error)
fi
