#!/usr/bin/env bash
# Regenerates the committed Swift code for Spec/flowir.proto:
#   Sources/FlowIR/Generated/flowir.pb.swift
# and checks that protoc-c (the C generator Tools/flowinfo builds with) accepts the schema too.
# Run after any change to Spec/flowir.proto, then commit the regenerated file.
#
#   Tools/regenerate-protos.sh [OUT_DIR]
#
# OUT_DIR defaults to Sources/FlowIR/Generated (relative paths are taken from the current
# directory). The plugin is $PROTOC_GEN_SWIFT if set, else protoc-gen-swift on PATH; it should be
# the swift-protobuf version that Package.swift names, so the generated code matches the runtime.
set -euo pipefail

out=${1:-}
[ -n "$out" ] && out=$(realpath -m -- "$out")
cd "$(dirname "$0")/.."
out=${out:-Sources/FlowIR/Generated}

# One message line, then any further lines as indented detail.
die() {
    printf 'regenerate-protos.sh: %s\n' "$1" >&2
    shift
    [ "$#" -eq 0 ] || printf '%s\n' "$@" >&2
    exit 1
}

# The swift-protobuf version the package depends on, e.g. 1.39.0.
want=$(sed -n 's|.*github.com/apple/swift-protobuf.git", *from: *"\([^"]*\)".*|\1|p' Package.swift)
want=${want:-"(see Package.swift)"}

command -v protoc > /dev/null ||
    die "protoc not found; install it with: apt-get install protobuf-compiler"
command -v protoc-c > /dev/null ||
    die "protoc-c not found; install it with: apt-get install protobuf-c-compiler"

plugin=${PROTOC_GEN_SWIFT:-$(command -v protoc-gen-swift || true)}
if [ -z "$plugin" ] || [ ! -x "$plugin" ]; then
    die "protoc-gen-swift not found (${PROTOC_GEN_SWIFT:+PROTOC_GEN_SWIFT=$PROTOC_GEN_SWIFT is not executable; }looked at \$PROTOC_GEN_SWIFT, then PATH)." \
        "Build it from swift-protobuf $want and point PROTOC_GEN_SWIFT at it:" \
        "  git clone --branch $want https://github.com/apple/swift-protobuf.git /tmp/swift-protobuf-src" \
        "  (cd /tmp/swift-protobuf-src && swift build -c release --product protoc-gen-swift)" \
        "  PROTOC_GEN_SWIFT=/tmp/swift-protobuf-src/.build/release/protoc-gen-swift $0"
fi

have=$("$plugin" --version 2>/dev/null | awk '{print $NF}' || true)
if [ "$have" != "$want" ]; then
    printf 'regenerate-protos.sh: warning: %s is version %s but Package.swift uses swift-protobuf %s\n' \
        "$plugin" "${have:-unknown}" "$want" >&2
fi

# Syntax and C-name check with protoc-c, into a scratch directory.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
protoc-c --c_out="$scratch" -I Spec Spec/flowir.proto

mkdir -p "$out"
protoc --plugin=protoc-gen-swift="$plugin" --swift_out=Visibility=Public:"$out" \
    -I Spec Spec/flowir.proto

echo "regenerated $out/flowir.pb.swift with protoc-gen-swift ${have:-?} ($(protoc --version))"
