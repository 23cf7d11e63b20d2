#!/bin/sh
# Builds the Debian package with dpkg-deb (from dpkg, on every Debian and
# Ubuntu system: nothing to download, and it is what installs the package).
#
#   packaging/build-deb.sh [VERSION [GOARCH]]
#
# VERSION defaults to `git describe`, GOARCH to the host's. The .deb goes to
# $OUT_DIR (default dist/).
set -eu
cd "$(dirname "$0")/.."

version=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo 0.0.0)}
version=${version#v}
case "$version" in
[0-9]*) ;;
*) version="0.0.0+git$version" ;; # Debian versions start with a digit
esac
goarch=${2:-$(go env GOARCH)}
case "$goarch" in
amd64 | arm64 | riscv64 | ppc64el | s390x) debarch=$goarch ;;
386) debarch=i386 ;;
arm) debarch=armhf ;;
*) echo "build-deb: no Debian architecture for GOARCH=$goarch" >&2; exit 2 ;;
esac
out=${OUT_DIR:-dist}
mkdir -p "$out"

root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT

install -d "$root/DEBIAN" "$root/usr/bin" "$root/etc/gcingest" \
	"$root/usr/lib/systemd/system" "$root/usr/share/doc/gcingest"
CGO_ENABLED=0 GOOS=linux GOARCH=$goarch go build -trimpath \
	-ldflags "-s -w -X main.version=$version" -o "$root/usr/bin/gcingest" .
install -m 0644 config.example.toml "$root/etc/gcingest/config.toml"
install -m 0644 packaging/gcingest.service "$root/usr/lib/systemd/system/gcingest.service"
install -m 0644 README.md config.example.toml "$root/usr/share/doc/gcingest/"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$debarch/" packaging/debian/control.in >"$root/DEBIAN/control"
echo "Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)" >>"$root/DEBIAN/control"
install -m 0644 packaging/debian/conffiles "$root/DEBIAN/conffiles"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
(cd "$root" && find usr etc -type f -exec md5sum {} + >DEBIAN/md5sums)

deb="$out/gcingest_${version}_${debarch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
