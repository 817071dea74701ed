#!/usr/bin/env bash
# Fetch libonnxruntime.so.1 (linux x64 and arm64) from the npm package onnxruntime-node into
# CACHE/VERSION/linux-{x64,arm64}/ and check each file against models/ort/ORT_SHA256SUMS.
# `npm pack` only downloads the tarball (through npm's own cache and integrity check); no install
# scripts run. When the cache already holds both files, this re-checks their digests and does not
# touch the network.
# Usage: models/ort/fetch.sh VERSION CACHE
set -euo pipefail
version=${1:?version}
cache=${2:?cache dir}
here=$(cd "$(dirname "$0")" && pwd)
sums=$here/ORT_SHA256SUMS
dest=$cache/$version

check() { (cd "$dest" && sha256sum --quiet --strict -c "$sums"); }

if [ -f "$dest/linux-x64/libonnxruntime.so.1" ] && [ -f "$dest/linux-arm64/libonnxruntime.so.1" ]; then
  if check; then exit 0; fi
  echo "ort: cached library fails its digest; fetching again" >&2
fi

command -v npm >/dev/null || { echo "ort: npm is needed to fetch onnxruntime-node@$version" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "ort: npm pack onnxruntime-node@$version"
(cd "$tmp" && npm pack --silent --ignore-scripts "onnxruntime-node@$version" >/dev/null)
tar -xzf "$tmp/onnxruntime-node-$version.tgz" -C "$tmp" --wildcards 'package/bin/napi-v*/linux/*/libonnxruntime.so.1*'
mkdir -p "$dest"
for arch in x64 arm64; do
  src=$(ls "$tmp"/package/bin/napi-v*/linux/$arch/libonnxruntime.so.1 | head -n1)
  mkdir -p "$tmp/out/linux-$arch"
  cp "$src" "$tmp/out/linux-$arch/libonnxruntime.so.1"
done
# Check before anything lands in the cache.
(cd "$tmp/out" && sha256sum --quiet --strict -c "$sums") || { echo "ort: digest mismatch for onnxruntime-node@$version (see $sums)" >&2; exit 1; }
for arch in x64 arm64; do
  mkdir -p "$dest/linux-$arch"
  mv -f "$tmp/out/linux-$arch/libonnxruntime.so.1" "$dest/linux-$arch/libonnxruntime.so.1"
done
check
echo "ort: $dest/linux-{x64,arm64}/libonnxruntime.so.1 ok"
