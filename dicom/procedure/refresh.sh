#!/bin/sh
# Refresh the embedded de-identification procedure from a checkout of
# https://github.com/DIAGNijmegen/rse-grand-challenge-dicom-de-id-procedure
# (at the release tag you want):
#
#     git clone --branch v0.20250708.0 https://github.com/DIAGNijmegen/rse-grand-challenge-dicom-de-id-procedure /tmp/proc
#     dicom/procedure/refresh.sh /tmp/proc
#     go test ./dicom/
#
# The tests check that every attribute the new procedure replaces has a VR
# in knownVR (dicom/tag.go); add the ones it names.
set -eu
src=${1:?usage: refresh.sh PATH-TO-CHECKOUT}
here=$(cd "$(dirname "$0")" && pwd)
test -f "$src/dist/procedure.json" || { echo "refresh.sh: $src/dist/procedure.json not found" >&2; exit 1; }
version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$src/dist/procedure.json" | head -n 1)
test -n "$version" || { echo "refresh.sh: no version in $src/dist/procedure.json" >&2; exit 1; }
commit=$(git -C "$src" rev-parse HEAD 2>/dev/null || echo unknown)
tag=$(git -C "$src" describe --tags --exact-match 2>/dev/null || echo "no tag")
cp "$src/dist/procedure.json" "$here/procedure.json.tmp"
mv "$here/procedure.json.tmp" "$here/procedure.json"
sed -i.bak "s|^    version .*|    version $version (tag $tag, commit $commit)|" "$here/NOTICE"
rm -f "$here/NOTICE.bak"
echo "procedure $version ($tag, $commit) copied to $here/procedure.json"
