#!/usr/bin/env bash
# Check a linux/arm64 release tarball on this (x86-64) machine under qemu-aarch64 (Debian's
# qemu-user, with the arm64 C library from libc6-arm64-cross): unpack it into a temp dir, check
# its SHA256SUMS, then run the arm64 binary: `perch version`, `perch validate` on the bundled
# example config, a 10 s run of the demo pipeline (its temperature step moved from 15 s to 2 s so
# that the threshold rule raises its alert within the run) on a store in the temp dir, and
# `perch db`, which must show the recorded readings and the alert, and the anomaly scores when
# the config has models (the binary finds lib/libonnxruntime.so.1 itself: no PERCH_ORT_LIB). Then
# the models/ort tests, built for linux/arm64 from this checkout, score on the bundle's library
# under qemu. `make release-check` runs it after `make release`.
#
# Usage: check.sh TARBALL
# Environment:
#   RELEASE_CHECK_CONFIG  a config to validate and run as well (a model pipeline, say), with the
#                         bundle's binary and no PERCH_ORT_LIB: the binary finds its library
#                         itself. Its paths and store are its own.
#   RELEASE_CHECK_FOR     how long to run it (default 10s)
#   RELEASE_CHECK_EXPECT  an extended regexp that its run's output or `perch db` (recent_alerts,
#                         scores, readings) must match, such as 'scores|ALERT'
#   GO (go)
set -euo pipefail
tarball=${1:?usage: check.sh TARBALL}
GO=${GO:-go}
export LC_ALL=C
start=$(date +%s.%N)
step() { awk -v s="$start" -v n="$(date +%s.%N)" -v m="$1" 'BEGIN { printf "release-check: %-46s %6.1f s\n", m, n - s }'; }
fail() { echo "release-check: FAIL: $*" >&2; exit 1; }

[ -f "$tarball" ] || fail "$tarball does not exist (make release)"
command -v qemu-aarch64 >/dev/null || fail "qemu-aarch64 missing (apt-get install qemu-user, or make deps)"
[ -f /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] ||
  fail "/usr/aarch64-linux-gnu has no arm64 dynamic loader (apt-get install libc6-arm64-cross, or make deps)"
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
unset PERCH_ORT_LIB # the binary must find its library itself

root=$(pwd)
tarball=$(realpath "$tarball")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# perch runs from the temp dir: from the checkout, it would find `make ort`'s cache, not lib/.
cd "$tmp"
tar -xzf "$tarball" -C "$tmp"
name=$(basename "$tarball" .tar.gz)
dir=$tmp/$name
[ -d "$dir" ] || fail "$tarball does not hold $name/"
version=${name#perch-}
version=${version%-linux-arm64}
(cd "$dir" && sha256sum --quiet --strict -c SHA256SUMS) || fail "$tarball: SHA256SUMS does not match its files"
# e_machine of an ELF file, little-endian: 0xb7 is AArch64.
for f in bin/perch bin/perch-boot lib/libonnxruntime.so.1; do
  [ "$(od -An -tx1 -j18 -N2 "$dir/$f" | tr -d ' \n')" = b700 ] || fail "$f is not an arm64 ELF file"
done
step "unpacked, SHA256SUMS ok, arm64 ELF"

perch() { qemu-aarch64 "$dir/bin/perch" "$@"; }

out=$(perch version) || fail "perch version exited $?"
[ "$out" = "perch $version" ] || fail "perch version printed '$out', want 'perch $version'"
step "perch version: $out"

perch validate "$dir/etc/perch.yaml" || fail "perch validate etc/perch.yaml exited $?"
step "perch validate etc/perch.yaml"

# The demo, with its temperature step at 2 s, so that the 10 s run raises the alert.
sed -e 's|at: 15s|at: 2s|' -e 's|\.\./var/perch\.db|../var/check.db|' "$dir/etc/perch.yaml" > "$dir/etc/check.yaml"
grep -q 'at: 2s' "$dir/etc/check.yaml" || fail "etc/perch.yaml has no temperature step 'at: 15s' to move"
grep -q 'check\.db' "$dir/etc/check.yaml" || fail "etc/perch.yaml does not record to ../var/perch.db"
perch run --config "$dir/etc/check.yaml" --for 10s --api-listen 127.0.0.1:0 > "$tmp/run.out" 2> "$tmp/run.err" ||
  { cat "$tmp/run.out" "$tmp/run.err" >&2; fail "perch run exited non-zero"; }
cat "$tmp/run.out"
grep -q 'ALERT raised' "$tmp/run.out" || { cat "$tmp/run.err" >&2; fail "the demo run raised no alert"; }
step "perch run --for 10s"

db=$dir/var/check.db
perch db --db "$db" recent_alerts > "$tmp/alerts.out" || fail "perch db recent_alerts exited non-zero"
cat "$tmp/alerts.out"
grep -q 'temperature above 30' "$tmp/alerts.out" || fail "perch db shows no alert"
perch db --db "$db" readings > "$tmp/readings.out" || fail "perch db readings exited non-zero"
n=$(grep -c '"temperature_c":' "$tmp/readings.out" || true)
[ "$n" -ge 5 ] || { cat "$tmp/readings.out" >&2; fail "perch db shows $n readings, want at least 5 (10 s at 2 a second)"; }
step "perch db: the alert and $n readings"
if grep -q '^models:' "$dir/etc/check.yaml"; then
  # The model node records the library it loaded in its model.started event.
  perch db --db "$db" events > "$tmp/events.out" || fail "perch db events exited non-zero"
  grep -q "\"library\":\"$dir/lib/libonnxruntime.so.1\"" "$tmp/events.out" ||
    { cat "$tmp/events.out" "$tmp/run.err" >&2; fail "the model node did not load the bundle's lib/libonnxruntime.so.1"; }
  perch db --db "$db" scores > "$tmp/scores.out" || fail "perch db scores exited non-zero"
  n=$(grep -c '"score":' "$tmp/scores.out" || true)
  [ "$n" -ge 1 ] || { cat "$tmp/scores.out" "$tmp/run.err" >&2; fail "perch db shows no anomaly score"; }
  step "perch db: $n anomaly scores (lib/libonnxruntime.so.1)"
fi

# Inference on the bundled arm64 library: the models/ort tests (the Go reference model against
# ONNX Runtime's scores), built from this checkout. CI=1: a library that fails to load fails.
(cd "$root" && CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=${CC_arm64:-aarch64-linux-gnu-gcc} \
  "$GO" test -c -trimpath -o "$tmp/ort.test" ./models/ort) || fail "building the models/ort tests for arm64 failed"
step "built models/ort tests for arm64"
(cd "$root/models/ort" && CI=1 PERCH_ORT_LIB=$dir/lib/libonnxruntime.so.1 qemu-aarch64 "$tmp/ort.test" \
  -test.run '^(TestScoreMatchesGo|TestScoreErrors|TestSessionFromFileAndOutputN1)$' -test.v) > "$tmp/ort.out" 2>&1 ||
  { cat "$tmp/ort.out" >&2; fail "models/ort tests on the bundled library failed"; }
grep -E '^(--- |ok|PASS)' "$tmp/ort.out"
[ "$(grep -c '^--- PASS' "$tmp/ort.out")" = 3 ] || { cat "$tmp/ort.out" >&2; fail "want 3 models/ort tests passed"; }
step "inference on lib/libonnxruntime.so.1"

if [ -n "${RELEASE_CHECK_CONFIG:-}" ]; then
  cfg=$(cd "$root" && realpath "$RELEASE_CHECK_CONFIG") || fail "RELEASE_CHECK_CONFIG=$RELEASE_CHECK_CONFIG does not exist"
  perch validate "$cfg" || fail "perch validate $cfg exited non-zero"
  perch run --config "$cfg" --for "${RELEASE_CHECK_FOR:-10s}" --api-listen 127.0.0.1:0 > "$tmp/cfg.out" 2> "$tmp/cfg.err" ||
    { cat "$tmp/cfg.out" "$tmp/cfg.err" >&2; fail "perch run --config $cfg exited non-zero"; }
  cat "$tmp/cfg.out"
  store=$(sed -n 's/.*, recording to \(.*\)$/\1/p' "$tmp/cfg.out" | head -n1)
  [ -n "$store" ] || fail "perch run did not say where it records"
  for v in recent_alerts scores readings; do perch db --db "$store" "$v" || fail "perch db $v exited non-zero"; done > "$tmp/cfg.db"
  if [ -n "${RELEASE_CHECK_EXPECT:-}" ]; then
    cat "$tmp/cfg.out" "$tmp/cfg.db" | grep -Eq -- "$RELEASE_CHECK_EXPECT" ||
      { cat "$tmp/cfg.db" "$tmp/cfg.err" >&2; fail "nothing in the run's output or perch db matches '$RELEASE_CHECK_EXPECT'"; }
  fi
  step "RELEASE_CHECK_CONFIG $cfg"
fi
echo "release-check: ok ($name)"
