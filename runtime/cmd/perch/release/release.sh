#!/usr/bin/env bash
# Build the release tarballs OUT/perch-VERSION-linux-{amd64,arm64}.tar.gz and OUT/SHA256SUMS.
# `make release` runs it from the repository root after `make modules ort`.
#
# Each tarball holds one directory, perch-VERSION-linux-ARCH/:
#   bin/perch                  cgo, -trimpath, main.Version=VERSION
#   bin/perch-boot             the A/B wrapper systemd runs (runtime/update/boot/cmd/perch-boot), static
#   lib/libonnxruntime.so.1    ONNX Runtime of the same arch, from the digest-checked `make ort` cache
#   modules/NAME.wasm          the first-party Wasm modules, each with NAME.manifest.yaml
#   models/NAME.card.yaml      the demo's anomaly model (`make demo-model`), its .onnx beside it
#   etc/perch.yaml             the demo pipeline (examples/demo), paths relative to the bundle
#   systemd/perch.service      the systemd unit
#   licenses/                  the licenses of what the bundle contains
#   SHA256SUMS                 of every other file, `sha256sum -c SHA256SUMS` from the directory
# Same inputs, same bytes: entries sorted, mtimes fixed (SOURCE_DATE_EPOCH, else the time of the
# last commit), owner and group numeric 0, modes 0755/0644, gzip without name nor time.
#
# Usage: release.sh VERSION OUT
# Environment: GO (go), MODS (the built modules' dir), MODULES (names of the modules to ship),
# MODELS (the trained models' dir: every NAME.card.yaml in it and the .onnx file it names),
# ORT_LIB_DIR (the `make ort` cache: ORT_LIB_DIR/linux-{x64,arm64}/libonnxruntime.so.1),
# CC_amd64 (gcc), CC_arm64 (aarch64-linux-gnu-gcc).
set -euo pipefail
version=${1:?usage: release.sh VERSION OUT}
out=${2:?usage: release.sh VERSION OUT}
GO=${GO:-go}
mods=${MODS:?MODS: the built modules directory}
modules=${MODULES:?MODULES: the names of the modules to ship}
models=${MODELS:?MODELS: the trained models directory}
ortdir=${ORT_LIB_DIR:?ORT_LIB_DIR: the make ort cache for this ONNX Runtime version}
here=$(cd "$(dirname "$0")" && pwd)
root=$(pwd)
[ -f go.mod ] && [ -d runtime/cmd/perch ] || { echo "release: run from the repository root" >&2; exit 1; }
case $version in
  */* | *' '* | '') echo "release: bad VERSION '$version' (no slashes nor spaces)" >&2; exit 1 ;;
esac
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export LC_ALL=C TZ=UTC

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

# licenses DIR BINARY: the licenses that apply to the bundle, into DIR.
licenses() {
  local dir=$1 bin=$2 modcache goroot
  mkdir -p "$dir"
  cp "$here/onnxruntime-LICENSE.txt" "$dir/onnxruntime-LICENSE.txt"
  goroot=$("$GO" env GOROOT)
  cp "$goroot/LICENSE" "$dir/go-LICENSE.txt"
  # Every module linked into the binary, from the module cache.
  modcache=$("$GO" env GOMODCACHE)
  "$GO" version -m "$bin" | awk '$1 == "dep" || $1 == "=>" { print $2, $3 }' | while read -r path ver; do
    # The module cache spells an upper-case letter as ! and its lower case.
    local esc src found=0 f
    esc=$(printf '%s' "$path" | sed -E 's/([A-Z])/!\L\1/g')
    src=$modcache/$esc@$ver
    [ -d "$src" ] || { echo "release: $path@$ver is not in the module cache ($src)" >&2; exit 1; }
    for f in "$src"/LICENSE* "$src"/LICENCE* "$src"/COPYING* "$src"/NOTICE*; do
      [ -f "$f" ] || continue
      mkdir -p "$dir/go/$path"
      cp "$f" "$dir/go/$path/"
      found=1
    done
    [ $found = 1 ] || { echo "release: no license file in $src ($path@$ver)" >&2; exit 1; }
  done
  # The Wasm modules link wasi-libc and compiler-rt's builtins (Debian's copyright files).
  for p in wasi-libc libclang-rt-14-dev-wasm32; do
    [ -f "/usr/share/doc/$p/copyright" ] || { echo "release: /usr/share/doc/$p/copyright missing (make deps)" >&2; exit 1; }
    cp "/usr/share/doc/$p/copyright" "$dir/$p-copyright.txt"
  done
  if [ -f "$root/LICENSE" ]; then cp "$root/LICENSE" "$dir/perch-LICENSE.txt"; fi
}

for arch in amd64 arm64; do
  case $arch in
    amd64) ortarch=x64 cc=${CC_amd64:-gcc} ;;
    arm64) ortarch=arm64 cc=${CC_arm64:-aarch64-linux-gnu-gcc} ;;
  esac
  name=perch-$version-linux-$arch
  stage=$tmp/$name
  mkdir -p "$stage"/{bin,lib,modules,models,etc,systemd}
  echo "release: $name"
  CGO_ENABLED=1 GOOS=linux GOARCH=$arch CC=$cc "$GO" build -trimpath \
    -ldflags "-s -w -X main.Version=$version" -o "$stage/bin/perch" ./runtime/cmd/perch
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch "$GO" build -trimpath -ldflags "-s -w" \
    -o "$stage/bin/perch-boot" ./runtime/update/boot/cmd/perch-boot
  lib=$ortdir/linux-$ortarch/libonnxruntime.so.1
  [ -f "$lib" ] || { echo "release: $lib missing (make ort)" >&2; exit 1; }
  cp "$lib" "$stage/lib/libonnxruntime.so.1"
  for m in $modules; do
    for f in "$mods/$m.wasm" "$mods/$m.manifest.yaml"; do
      [ -f "$f" ] || { echo "release: $f missing (make modules)" >&2; exit 1; }
      cp "$f" "$stage/modules/"
    done
  done
  for card in "$models"/*.card.yaml; do
    [ -f "$card" ] || { echo "release: no model card in $models (make demo-model)" >&2; exit 1; }
    onnx=$(sed -n 's/^model: *//p' "$card" | tr -d "\"'")
    [ -n "$onnx" ] && [ -f "$models/$onnx" ] || { echo "release: $card names no model file beside it" >&2; exit 1; }
    cp "$card" "$models/$onnx" "$stage/models/"
  done
  # The demo config, its paths moved from the repository's layout to the bundle's.
  sed -e 's|\.\./\.\./build/modules/|../modules/|' -e 's|\.\./\.\./build/models/|../models/|' \
    -e 's|\.\./\.\./var/|../var/|' \
    examples/demo/perch.yaml > "$stage/etc/perch.yaml"
  if grep -n '\.\./\.\./' "$stage/etc/perch.yaml" >&2; then
    echo "release: examples/demo/perch.yaml has a path the bundle does not have (above)" >&2; exit 1
  fi
  cp runtime/cmd/perch/perch.service "$stage/systemd/perch.service"
  licenses "$stage/licenses" "$stage/bin/perch"
  find "$stage" -type d -exec chmod 0755 {} +
  find "$stage" -type f -exec chmod 0644 {} +
  chmod 0755 "$stage/bin/perch" "$stage/bin/perch-boot"
  (cd "$stage" && find . -type f ! -name SHA256SUMS | sed 's|^\./||' | sort | xargs sha256sum > SHA256SUMS)
  chmod 0644 "$stage/SHA256SUMS"
  tar --sort=name --format=gnu --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
    -C "$tmp" -cf - "$name" | gzip -n -9 > "$out/$name.tar.gz"
done
(cd "$out" && sha256sum "perch-$version-linux-amd64.tar.gz" "perch-$version-linux-arm64.tar.gz" > SHA256SUMS)
cat "$out/SHA256SUMS"
