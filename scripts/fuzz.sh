#!/usr/bin/env bash
# fuzz.sh: runs every Go fuzz target of the module, one after the other,
# for $FUZZTIME each (go test takes one -fuzz target per run). The targets
# are found, not listed: every `func FuzzXxx(` at the start of a line of a
# *_test.go file, so a new one runs without editing anything.
#
#   FUZZTIME          per target (default 20s; "1000x" counts runs)
#   FUZZMINIMIZETIME  minimisation of each new input, interesting or failing
#                     (default 500x: a time-bounded minimisation of every new
#                     corpus entry would eat most of a short run)
#   GO                the go command (default go)
#   arguments         only the targets whose name matches one of them (a
#                     grep -E pattern each), e.g. scripts/fuzz.sh FuzzReadCSV
#
# It fails when a target fails: go test then says which input, written
# under the package's testdata/fuzz/<target>/, where plain `go test` (and
# so `make test`) replays it until the bug is fixed. Every target runs even
# after one failed; the failing ones are listed at the end. A run that go
# test fails at the -fuzztime deadline without any failing input (a race of
# Go's fuzzing coordinator before Go 1.27, golang/go#75804) is reported but
# not counted as a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

GO="${GO:-go}"
FUZZTIME="${FUZZTIME:-20s}"
FUZZMINIMIZETIME="${FUZZMINIMIZETIME:-500x}"

# "dir name" pairs, sorted; vendored, hidden and node_modules trees left out.
targets=$(grep -rE --include='*_test.go' --exclude-dir=node_modules --exclude-dir='.?*' \
	-o '^func Fuzz[A-Za-z0-9_]*\(' . |
	sed -E 's|^\./(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($|\1 \2|; s|^\./[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\($|. \1|' |
	sort -u)
if [ $# -gt 0 ]; then
	pattern=$(IFS='|'; echo "$*")
	targets=$(grep -E " ($pattern)\$" <<<"$targets" || true)
fi
if [ -z "$targets" ]; then
	echo "fuzz: no fuzz targets found${1:+ matching $*}" >&2
	exit 1
fi

n=$(wc -l <<<"$targets")
echo "fuzz: $n targets, $FUZZTIME each" >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=()
flaked=()
while read -r dir name <&3; do
	echo "fuzz: $name (./$dir)" >&2
	corpus="$dir/testdata/fuzz/$name"
	before=$(ls -A "$corpus" 2>/dev/null || true)
	if "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINIMIZETIME" "./$dir" 2>&1 | tee "$log"; then
		continue
	fi
	# Go before 1.27 may fail a run at the end of a -fuzztime duration with
	# a bare "context deadline exceeded" and no failing input: a race in
	# its fuzzing coordinator (golang/go#75804), not a finding.
	after=$(ls -A "$corpus" 2>/dev/null || true)
	if [ "$before" = "$after" ] && grep -qE '^[[:space:]]+context deadline exceeded$' "$log" &&
		! grep -qE 'Failing input written|^[[:space:]]*--- FAIL: [^ ]+/' "$log"; then
		echo "fuzz: $name: stopped by the -fuzztime deadline race of go test (golang/go#75804), no failing input; not counted" >&2
		flaked+=("$name (./$dir)")
		continue
	fi
	failed+=("$name (./$dir)")
done 3<<<"$targets"

if [ ${#flaked[@]} -gt 0 ]; then
	printf 'fuzz: deadline race, not counted: %s\n' "${flaked[@]}" >&2
fi
if [ ${#failed[@]} -gt 0 ]; then
	printf 'fuzz: FAILED: %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: no failing input in $n targets${flaked:+ (${#flaked[@]} cut short by the deadline race)}" >&2
