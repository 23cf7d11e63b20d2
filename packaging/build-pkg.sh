#!/bin/sh
# Builds the Linux packages (.deb and .rpm) from the one description
# packaging/nfpm.yaml, with nfpm run as a pinned tool: nothing to install,
# and the project's go.mod stays free of a packager's dependencies.
#
#   packaging/build-pkg.sh [VERSION [GOARCH]]
#
# VERSION defaults to `git describe`, GOARCH to the host's. FORMATS (default
# "deb rpm") picks the formats; the packages go to $OUT_DIR (default dist/),
# named gcingest_<version>_linux_<goarch>.<format>, and their paths are
# printed one per line.
set -eu
cd "$(dirname "$0")/.."

# v2.45.0: later releases need go.digitalxero.dev modules that the module
# proxy this project builds with refuses (403).
NFPM=${NFPM:-github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.0}

version=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo 0.0.0)}
version=${version#v}
case "$version" in
[0-9]*) ;;
*) version="0.0.0+git$version" ;; # deb and rpm versions start with a digit
esac
# '-' separates the release in both formats: 1.2.3-4-gabc becomes 1.2.3+4.gabc.
version=$(printf '%s' "$version" | sed -e 's/-/+/' -e 's/-/./g')
goarch=${2:-$(go env GOARCH)}
out=${OUT_DIR:-dist}
mkdir -p "$out"

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -trimpath \
	-ldflags "-s -w -X main.version=$version" -o "$build/gcingest" .

for format in ${FORMATS:-deb rpm}; do
	pkg="$out/gcingest_${version}_linux_${goarch}.$format"
	VERSION=$version GOARCH=$goarch BUILD_DIR=$build \
		go run "$NFPM" package --config packaging/nfpm.yaml --packager "$format" --target "$pkg" >&2
	echo "$pkg"
done
