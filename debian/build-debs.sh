#!/bin/sh
# Builds the two Debian packages, epmd-rs and epmd-rs-as-epmd, from an already built
# binary with dpkg-dev's own tools (dpkg-shlibdeps, dpkg-gencontrol, dpkg-deb): no build
# of its own and no root needed (dpkg-deb --root-owner-group).
#
#   debian/build-debs.sh BIN OUTDIR [VERSION]
#
# BIN: the epmd-rs binary to ship (make deb: target/release/epmd-rs); it is stripped in the
# package. OUTDIR: where the .deb files go. VERSION: the package version, by default the
# one of debian/changelog (which must be Cargo.toml's); the tests build a higher one to
# upgrade to. DEB_COMPRESS: dpkg-deb's compressor (xz by default; the tests use none).
# Run from anywhere; it works in the repository root.
set -eu

[ $# -ge 2 ] || { echo "usage: $0 BIN OUTDIR [VERSION]" >&2; exit 2; }
BIN=$1 OUT=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[ -x "$BIN" ] || { echo "$0: no executable $BIN" >&2; exit 2; }
for tool in dpkg-deb dpkg-gencontrol dpkg-shlibdeps dpkg-parsechangelog strip make; do
	command -v "$tool" >/dev/null || { echo "$0: $tool missing (apt-get install dpkg-dev binutils make)" >&2; exit 2; }
done

CHANGELOG_VERSION=$(dpkg-parsechangelog -S Version)
CARGO_VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
if [ "$CHANGELOG_VERSION" != "$CARGO_VERSION" ]; then
	echo "$0: debian/changelog is at $CHANGELOG_VERSION, Cargo.toml at $CARGO_VERSION: add a changelog entry" >&2
	exit 1
fi
VERSION=${3:-$CHANGELOG_VERSION}
# File dates in the packages: the changelog's (reproducible builds).
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -S Timestamp)
export SOURCE_DATE_EPOCH

WORK=$(mktemp -d "${TMPDIR:-/tmp}/epmd-rs-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
umask 022
mkdir -p "$OUT"

# Docs every package carries: the machine-readable copyright and the changelog.
docs() { # $1 package staging root, $2 package name
	d="$1/usr/share/doc/$2"
	install -d "$d"
	install -m 0644 debian/copyright "$d/copyright"
	gzip -9n < debian/changelog > "$d/changelog.gz"
	chmod 0644 "$d/changelog.gz"
}

# Maintainer scripts, triggers and lintian overrides of package $2 into staging root $1.
control_files() {
	install -d "$1/DEBIAN"
	for s in preinst postinst prerm postrm; do
		[ ! -e "debian/$2.$s" ] || install -m 0755 "debian/$2.$s" "$1/DEBIAN/$s"
	done
	[ ! -e "debian/$2.triggers" ] || install -m 0644 "debian/$2.triggers" "$1/DEBIAN/triggers"
	if [ -e "debian/$2.lintian-overrides" ]; then
		install -D -m 0644 "debian/$2.lintian-overrides" "$1/usr/share/lintian/overrides/$2"
	fi
}

# The control file (with Installed-Size) and md5sums, then the .deb.
finish() { # $1 staging root, $2 package name
	dpkg-gencontrol -p"$2" -P"$1" -T"$WORK/$2.substvars" -f"$WORK/files" -v"$VERSION"
	(cd "$1" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
		| xargs -0r md5sum > DEBIAN/md5sums)
	chmod 0644 "$1/DEBIAN/md5sums"
	dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$1" "$OUT" >/dev/null
}

# epmd-rs: the Makefile's install layout under /usr (units in /usr/lib/systemd/system with
# ExecStart=/usr/bin/epmd-rs), zsh completions where Debian's zsh looks.
P="$WORK/epmd-rs"
make -s -C "$ROOT" install DESTDIR="$P" PREFIX=/usr BIN="$BIN" GEN="$WORK/generated" \
	ZSHDIR=/usr/share/zsh/vendor-completions >/dev/null
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$P/usr/bin/epmd-rs"
gzip -9n "$P/usr/share/man/man1/epmd-rs.1"
docs "$P" epmd-rs
control_files "$P" epmd-rs
dpkg-shlibdeps -T"$WORK/epmd-rs.substvars" "$P/usr/bin/epmd-rs"
finish "$P" epmd-rs

# epmd-rs-as-epmd: /usr/bin/epmd and epmd(1) (diverted by the preinst) are epmd-rs's; the
# maintainer scripts do the rest.
P="$WORK/epmd-rs-as-epmd"
install -d "$P/usr/bin"
ln -s epmd-rs "$P/usr/bin/epmd"
install -d "$P/usr/share/man/man1"
ln -s epmd-rs.1.gz "$P/usr/share/man/man1/epmd.1.gz"
docs "$P" epmd-rs-as-epmd
control_files "$P" epmd-rs-as-epmd
finish "$P" epmd-rs-as-epmd

ARCH=$(dpkg-architecture -qDEB_HOST_ARCH 2>/dev/null || dpkg --print-architecture)
echo "$OUT/epmd-rs_${VERSION}_${ARCH}.deb"
echo "$OUT/epmd-rs-as-epmd_${VERSION}_all.deb"
