#!/usr/bin/env bash
# Copies the network boot loaders into the TFTP boot directory: iPXE from Debian's `ipxe` package, and
# the signed chain for Secure Boot PCs (uefi-boot = signed): Debian's Microsoft-signed shim from
# `shim-signed` and Debian's signed network GRUB from `grub-efi-amd64-signed`, under the name shim
# loads it by (grubx64.efi). Binaries are copied at install time, never committed.
#   usage: boot/setup-loaders.sh [DEST]     (default: boot/loaders next to this script)
#          boot/setup-loaders.sh --print-stamp    (the stamp it writes into DEST.manifest.txt)
# NETCLONE_IPXE_PACKAGE and NETCLONE_SHIM_PACKAGE override package names (tests use them to exercise the
# missing-package path).
set -euo pipefail

pkg="${NETCLONE_IPXE_PACKAGE:-ipxe}"
shim_pkg="${NETCLONE_SHIM_PACKAGE:-shim-signed}"
grub_pkg=grub-efi-amd64-signed
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Which netclone set the loaders up, from which script. `netclone serve` compares the stamp in
# DEST.manifest.txt (beside DEST) with its own and says when the loaders are out of date; src/serve/boot-files.ts
# (LOADER_SOURCES) hashes the same inputs the same way.
stamp_inputs=(boot/setup-loaders.sh)
print_stamp() {
  local root version
  root="$(cd "$here/.." && pwd)"
  version="$(sed -n 's/^  "version": "\([^"]*\)".*/\1/p' "$root/package.json" | head -n1)"
  if [ -z "$version" ]; then echo "setup-loaders: no \"version\" in $root/package.json (run from a netclone checkout)" >&2; return 1; fi
  echo "netclone-version: $version"
  echo "sources: sha256:$(cd "$root" && find "${stamp_inputs[@]}" -type f ! -name '*.md' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
}
if [ "${1:-}" = --print-stamp ]; then print_stamp; exit 0; fi
stamp="$(print_stamp)"
dest="${1:-$here/loaders}"
# BIOS PXE ROM -> undionly.kpxe; UEFI PXE -> snponly.efi (uses firmware's NIC driver);
# ipxe.efi carries its own NIC drivers for firmware whose SNP is broken.
loaders=(undionly.kpxe snponly.efi ipxe.efi)

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "setup-loaders: dpkg-query not found; this script expects Debian/Ubuntu. Copy ${loaders[*]} into $dest by hand." >&2
  exit 1
fi
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]; }
for need in "$pkg:the iPXE boot loaders" "$shim_pkg:the Microsoft-signed shim (Secure Boot)" "$grub_pkg:the signed network GRUB (Secure Boot)"; do
  if ! installed "${need%%:*}"; then
    echo "setup-loaders: package '${need%%:*}' is not installed; it provides ${need#*:}." >&2
    echo "  fix: apt-get install $pkg $shim_pkg $grub_pkg   (then run this script again)" >&2
    exit 1
  fi
done

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
# The signed chain: package, the file it ships, the name it is served under.
signed=("$shim_pkg /usr/lib/shim/shimx64.efi.signed shimx64.efi" "$grub_pkg /usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed grubx64.efi")
for entry in "${signed[@]}"; do
  read -r spkg src name <<<"$entry"
  if ! dpkg -L "$spkg" | grep -qxF "$src" || [ ! -f "$src" ]; then
    echo "setup-loaders: package '$spkg' does not contain $src (dpkg -L $spkg); reinstall it: apt-get install --reinstall $spkg" >&2
    missing=1
    continue
  fi
  install -m 0644 "$src" "$dest/.$name.tmp"
  mv -f "$dest/.$name.tmp" "$dest/$name"
  echo "setup-loaders: $src -> $dest/$name"
  loaders+=("$name")
done
if [ "$missing" = 0 ]; then
  {
    echo "# netclone network boot loaders, copied by boot/setup-loaders.sh from Debian's $pkg, $shim_pkg and $grub_pkg packages"
    echo "copied: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "$stamp"
    echo "ipxe-package: $pkg $(dpkg-query -W -f='${Version}' "$pkg")"
    echo "shim-package: $shim_pkg $(dpkg-query -W -f='${Version}' "$shim_pkg")"
    echo "grub-package: $grub_pkg $(dpkg-query -W -f='${Version}' "$grub_pkg")"
    for name in "${loaders[@]}"; do echo "$name sha256:$(sha256sum "$dest/$name" | cut -d' ' -f1)"; done
  } >"${dest%/}.manifest.txt.tmp"
  # Beside the folder, not in it: TFTP serves everything in the folder, and this is not a loader.
  mv -f "${dest%/}.manifest.txt.tmp" "${dest%/}.manifest.txt"
  rm -f "$dest/manifest.txt"
  echo "setup-loaders: stamped ${dest%/}.manifest.txt"
fi
exit "$missing"
