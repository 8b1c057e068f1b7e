#!/usr/bin/env bash
# Copies the iPXE network boot loaders shipped by Debian's `ipxe` package into the TFTP boot
# directory. Binaries are copied at install time, never committed.
#   usage: boot/setup-loaders.sh [DEST]     (default: boot/loaders next to this script)
# NETCLONE_IPXE_PACKAGE overrides the package name (tests use it to exercise the missing-package path).
set -euo pipefail

pkg="${NETCLONE_IPXE_PACKAGE:-ipxe}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:-$here/loaders}"
# BIOS PXE ROM -> undionly.kpxe; UEFI PXE -> snponly.efi (uses firmware's NIC driver);
# ipxe.efi carries its own NIC drivers for firmware whose SNP is broken.
loaders=(undionly.kpxe snponly.efi ipxe.efi)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "setup-loaders: dpkg-query not found; this script expects Debian/Ubuntu. Copy ${loaders[*]} into $dest by hand." >&2
  exit 1
fi
if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]; then
  echo "setup-loaders: package '$pkg' is not installed; it provides the iPXE boot loaders." >&2
  echo "  fix: apt-get install $pkg   (then run this script again)" >&2
  exit 1
fi

mkdir -p "$dest"
missing=0
for name in "${loaders[@]}"; do
  # Ask the package where it put the file instead of guessing; prefer /usr/lib/ipxe when listed twice.
  src="$(dpkg -L "$pkg" | grep -E "/${name//./\\.}\$" | sort | grep -m1 '^/usr/lib/ipxe/' || dpkg -L "$pkg" | grep -m1 -E "/${name//./\\.}\$" || true)"
  if [ -z "$src" ] || [ ! -f "$src" ]; then
    echo "setup-loaders: package '$pkg' does not contain $name (dpkg -L $pkg); reinstall it: apt-get install --reinstall $pkg" >&2
    missing=1
    continue
  fi
  # Copy to a temp name then rename, so a TFTP server never serves a half-written loader.
  install -m 0644 "$src" "$dest/.$name.tmp"
  mv -f "$dest/.$name.tmp" "$dest/$name"
  echo "setup-loaders: $src -> $dest/$name"
done
exit "$missing"
