#!/usr/bin/env bash
# Runs the OCI distribution-spec conformance suite against `perch registry serve` on a free
# loopback port with a temporary root, then pushes a Wasm module with the oras CLI (CNCF Wasm
# media types) and pulls it back, comparing bytes. Exits non-zero on any failure.
#
#   registry/conformance.sh PERCH CONFORMANCE ORAS WASM [RESULTS_DIR]
#
# `make conformance` builds the binaries and calls this. The suite's reports (report.html,
# results.yaml, junit.xml) and the registry's log go to RESULTS_DIR (default build/conformance).
# The features switched off below are explained in registry/CONFORMANCE.md.
set -euo pipefail

if [ $# -lt 4 ]; then
  echo "usage: $0 PERCH CONFORMANCE ORAS WASM [RESULTS_DIR]" >&2
  exit 2
fi
perch=$(realpath "$1") conformance=$(realpath "$2") oras=$(realpath "$3") wasm=$(realpath "$4")
results=$(realpath -m "${5:-build/conformance}")
for f in "$perch" "$conformance" "$oras"; do
  [ -x "$f" ] || { echo "conformance: $f is not an executable" >&2; exit 1; }
done
[ -f "$wasm" ] || { echo "conformance: $wasm not found (run make modules)" >&2; exit 1; }
if ! "$perch" registry help >/dev/null 2>&1; then
  echo "conformance: $perch has no 'registry' command (wire cmdRegistry in runtime/cmd/perch/main.go)" >&2
  exit 1
fi

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    wait "$pid" || echo "conformance: perch registry serve exited with status $? on SIGTERM" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT
rm -rf "$results"
mkdir -p "$results"

# Start the registry on port 0 and read the address it bound from its first stdout line.
"$perch" registry serve --root "$work/root" --listen 127.0.0.1:0 --log-level warn \
  >"$work/serve.out" 2>"$results/registry.log" &
pid=$!
url=
for _ in $(seq 1 300); do # up to 30 s on a loaded box
  url=$(sed -n 's/^perch registry: serving \(http:[^ ]*\).*/\1/p' "$work/serve.out")
  [ -n "$url" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "conformance: perch registry serve exited:" >&2
    cat "$results/registry.log" >&2
    exit 1
  fi
  sleep 0.1
done
[ -n "$url" ] || { echo "conformance: the registry did not report its address within 30 s" >&2; exit 1; }
addr=${url#http://}
echo "registry: $url (root $work/root)"

# The suite. It reads only OCI_* variables (and ./oci-conformance.yaml, hence the cd), and it
# exits 0 even when it cannot load its configuration: check results.yaml too.
set +e
(
  cd "$work"
  env OCI_REGISTRY="$addr" OCI_TLS=disabled \
    OCI_REPO1=conformance/repo1 OCI_REPO2=conformance/repo2 \
    OCI_RESULTS_DIR="$results" OCI_LOG=warn \
    OCI_API_PULL=true OCI_API_PUSH=true \
    OCI_API_TAGS_LIST=true OCI_API_TAGS_DELETE=true \
    OCI_API_MANIFESTS_DELETE=true OCI_API_BLOBS_DELETE=true OCI_API_BLOBS_UPLOAD_CANCEL=true \
    OCI_DATA_SUBJECT=true OCI_DATA_SUBJECT_MISSING=true OCI_DATA_SUBJECT_LIST=true \
    OCI_API_REFERRER=false OCI_DATA_SHA512=false OCI_DATA_NONDISTRIBUTABLE=false \
    "$conformance"
) >"$results/summary.txt" 2>&1
rc=$?
set -e
sed -n '/^OCI Conformance Result/,/^  Total/p' "$results/summary.txt"
if [ $rc -ne 0 ] || ! grep -q '^OCI Conformance Result: Pass' "$results/summary.txt" || [ ! -s "$results/results.yaml" ]; then
  echo "conformance: FAILED (exit $rc); see $results/summary.txt and $results/report.html" >&2
  grep -E ': (FAIL|Error)$' "$results/summary.txt" | head -40 >&2 || true
  exit 1
fi
echo "conformance: pass; reports in $results"

# oras round trip with the CNCF Wasm OCI artifact layout.
ref="$addr/modules/$(basename "$wasm" .wasm):conformance"
sum=$(sha256sum "$wasm" | cut -d' ' -f1)
printf '{"architecture":"wasm","os":"wasip1","layerDigests":["sha256:%s"]}' "$sum" >"$work/config.json"
(cd "$(dirname "$wasm")" && "$oras" push --plain-http --no-tty \
  --config "$work/config.json:application/vnd.wasm.config.v0+json" \
  "$ref" "$(basename "$wasm"):application/wasm") >"$results/oras.log" 2>&1 ||
  { cat "$results/oras.log" >&2; echo "conformance: oras push failed" >&2; exit 1; }
manifest=$("$oras" manifest fetch --plain-http "$ref" | tr -d ' \n')
for want in '"config":{"mediaType":"application/vnd.wasm.config.v0+json"' \
  "\"layers\":[{\"mediaType\":\"application/wasm\",\"digest\":\"sha256:$sum\""; do
  case "$manifest" in
  *"$want"*) ;;
  *) echo "conformance: manifest lacks $want: $manifest" >&2; exit 1 ;;
  esac
done
"$oras" pull --plain-http --no-tty -o "$work/pulled" "$ref" >>"$results/oras.log" 2>&1 ||
  { cat "$results/oras.log" >&2; echo "conformance: oras pull failed" >&2; exit 1; }
cmp "$wasm" "$work/pulled/$(basename "$wasm")"
echo "oras: pushed and pulled $(basename "$wasm") ($(stat -c %s "$wasm") bytes, sha256:$sum) with the CNCF Wasm media types: identical"
