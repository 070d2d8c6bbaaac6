#!/usr/bin/env bash
# Builds a .tflow model file from a text-format flowir.ModelHeader, with no Swift involved:
# protoc encodes the header, and this script adds the preamble, the zero padding to the 64-byte
# aligned data section, and zero-filled tensor data as long as the tensor table asks for.
#
#   make-testfile.sh [OUT.tflow [HEADER.txtpb]]
#
# OUT defaults to tiny.tflow in a new temporary directory; HEADER to testdata/tiny.txtpb.
# Prints the path written. Needs bash, protoc (Debian protobuf-compiler) and coreutils.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$(mktemp -d)/tiny.tflow}
txt=${2:-$here/testdata/tiny.txtpb}
[ -r "$txt" ] || { echo "make-testfile.sh: cannot read $txt" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Encode from the repository root, so the schema is named exactly as in the project's tools.
(cd "$root" && protoc --encode=flowir.ModelHeader -I Spec Spec/flowir.proto) \
    < "$txt" > "$work/header.pb"
# Decoding back gives canonical text (one field a line), from which the data length is read:
# the largest offset + byte_size over the tensor table (an absent field is 0).
data_len=$( (cd "$root" && protoc --decode=flowir.ModelHeader -I Spec Spec/flowir.proto) \
    < "$work/header.pb" | awk '
        /^tensors \{/ { inside = 1; off = 0; size = 0; next }
        inside && /^  offset: /    { off = $2 }
        inside && /^  byte_size: / { size = $2 }
        inside && /^\}/ { inside = 0; if (off + size > end) end = off + size }
        END { print end + 0 }')

n=$(wc -c < "$work/header.pb")
# Flag 0x1 when some tensor has a layout other than row-major.
flags=0
(cd "$root" && protoc --decode=flowir.ModelHeader -I Spec Spec/flowir.proto) < "$work/header.pb" > "$work/header.txt"
grep -q '^  layout: LAYOUT_PANELS32' "$work/header.txt" && flags=1
pad=$(( (64 - (24 + n) % 64) % 64 ))

# Writes $1 as a little-endian unsigned integer of $2 bytes.
le() {
    local i
    for (( i = 0; i < $2; i++ )); do
        printf "\\$(printf '%03o' $(( ($1 >> (8 * i)) & 255 )))"
    done
}

{
    printf 'TFLOWMDL'
    le 1 4          # format version
    le "$flags" 4   # flags: 0x1 when some tensor has a layout (Spec/ModelFile.md §1)
    le "$n" 8       # header length
    cat "$work/header.pb"
    head -c "$pad" /dev/zero
    head -c "$data_len" /dev/zero
} > "$out"

echo "$out"
