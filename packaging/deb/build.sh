#!/bin/bash
# Build build/pam-jctotp_<version>_<arch>.deb from a staged tree with plain
# dpkg-deb (no debhelper). Run from anywhere; needs gcc, make, libpam0g-dev,
# dpkg-dev. Prints the path of the .deb.
#
# The version is the top entry of packaging/deb/changelog; its upstream part
# must match pam_jctotp.__version__.
set -euo pipefail
umask 022

repo=$(cd "$(dirname "$0")/../.." && pwd)
src=$repo/packaging/deb
out=$repo/build
stage=$out/deb-root

version=$(sed -n '1s/^pam-jctotp (\([^)]*\)).*/\1/p' "$src/changelog")
upstream=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$repo/pam_jctotp/__init__.py")
if [ "${version%-*}" != "$upstream" ]; then
    echo "build.sh: changelog says $version, pam_jctotp says $upstream" >&2
    exit 1
fi
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
deb=$out/pam-jctotp_${version}_${arch}.deb
doc=$stage/usr/share/doc/pam-jctotp
# Reproducible: every mtime is the changelog's date.
SOURCE_DATE_EPOCH=$(date -d "$(sed -n 's/^ -- .*>  //p' "$src/changelog" | head -1)" +%s)
export SOURCE_DATE_EPOCH

make -s -C "$repo/native" pam_jctotp.so

rm -rf "$stage"
mkdir -p "$stage/DEBIAN"

# The PAM module, where libpam looks for it (next to pam_unix.so).
install -D -m 0644 "$repo/native/pam_jctotp.so" "$stage/lib/$multiarch/security/pam_jctotp.so"
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$stage/lib/$multiarch/security/pam_jctotp.so"

# The daemon, the CLI and the portal: the package (every .py, subpackages too,
# the portal's templates and style, the mail templates) and three
# #!/usr/bin/python3 entry points.
(cd "$repo" && find pam_jctotp \( -name '*.py' -o -name '*.html' -o -name '*.css' \
    -o -name '*.txt' \) -not -path '*/__pycache__/*' -print0) |
    while IFS= read -r -d '' f; do
        install -D -m 0644 "$repo/$f" "$stage/usr/lib/python3/dist-packages/$f"
    done
install -D -m 0755 "$src/bin/jctotpd" "$stage/usr/sbin/jctotpd"
install -D -m 0755 "$src/bin/jctotp" "$stage/usr/bin/jctotp"
install -D -m 0755 "$src/bin/jctotp-portal" "$stage/usr/bin/jctotp-portal"

# Manual pages, bash completion.
for page in "$repo"/man/*.[0-9]; do
    section=${page##*.}
    install -d "$stage/usr/share/man/man$section"
    gzip -9n <"$page" >"$stage/usr/share/man/man$section/$(basename "$page").gz"
done
install -D -m 0644 "$src/bash-completion" "$stage/usr/share/bash-completion/completions/jctotp"

# Configuration (a conffile), the unit, the pam-auth-update profile (off by
# default; why it looks the way it does: README.Debian, section 2b -- the
# profile format has no comments).
install -D -m 0644 "$src/config.yaml" "$stage/etc/jctotp/config.yaml"
install -D -m 0644 "$src/jctotpd.service" "$stage/lib/systemd/system/jctotpd.service"
install -D -m 0644 "$src/jctotp-portal.service" "$stage/lib/systemd/system/jctotp-portal.service"
install -D -m 0644 "$src/pam-config" "$stage/usr/share/pam-configs/jctotp"
install -D -m 0644 "$src/logrotate" "$stage/etc/logrotate.d/pam-jctotp"

# Documentation. The sshd drop-ins and PAM stacks are examples only:
# turning MFA on for a service is the admin's decision.
install -D -m 0644 "$src/copyright" "$doc/copyright"
install -m 0644 "$src/README.Debian" "$doc/README.Debian"
gzip -9n <"$src/changelog" >"$doc/changelog.Debian.gz"
install -m 0644 "$repo/docs/protocol.md" "$doc/protocol.md"
install -D -m 0644 -t "$doc/examples/sshd_config.d" "$repo"/sshd_config.d/*.conf
install -D -m 0644 -t "$doc/examples/pam.d" "$repo"/packaging/pam.d/*
install -m 0644 "$src/jctotpd-no-accounts.conf" "$doc/examples/"
install -D -m 0644 "$src/lintian-overrides" "$stage/usr/share/lintian/overrides/pam-jctotp"

# Control files.
# libc6 and libpam0g with the versions the module's symbols need.
tmp=$(mktemp -d "$out/shlibs.XXXXXX")
mkdir "$tmp/debian"
printf 'Source: pam-jctotp\n\nPackage: pam-jctotp\nArchitecture: any\n' >"$tmp/debian/control"
shlibs=$(cd "$tmp" && dpkg-shlibdeps -O "$stage/lib/$multiarch/security/pam_jctotp.so" 2>/dev/null)
shlibs=${shlibs#shlibs:Depends=}
rm -rf "$tmp"
[ -n "$shlibs" ] || { echo "build.sh: dpkg-shlibdeps found nothing" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@SHLIBS@/$shlibs/" "$src/control.in" >"$stage/DEBIAN/control"
printf '%s\n' /etc/jctotp/config.yaml /etc/logrotate.d/pam-jctotp >"$stage/DEBIAN/conffiles"
install -m 0755 "$src/postinst" "$src/prerm" "$src/postrm" "$stage/DEBIAN/"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' |
    LC_ALL=C sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums" "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles"

find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
dpkg-deb --build --root-owner-group -Zxz "$stage" "$deb" >/dev/null
echo "$deb"
