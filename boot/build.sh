#!/usr/bin/env bash
# Builds the netclone thin client: boot/dist/vmlinuz + boot/dist/initrd.img + boot/dist/manifest.txt.
# Everything comes from Debian packages (apt-get download + dpkg -x); no kernel is installed on the host.
# Downloads are cached in boot/.cache/debs so rebuilds are fast; the initrd tree is rebuilt from scratch
# every time so the result only depends on the cached packages and boot/client/.
set -euo pipefail

START=$(date +%s)
BOOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLIENT_DIR="$BOOT_DIR/client"
CACHE="$BOOT_DIR/.cache"
DEBS="$CACHE/debs"
DIST="$BOOT_DIR/dist"
WORK="$CACHE/work"
ROOTFS="$WORK/rootfs"

# Drivers for the hardware an office has. Each module's dependency closure is added automatically.
NIC_MODULES="e1000 e1000e igb igc r8169 realtek tg3 bnx2x atlantic virtio_net r8152 ax88179_178a usbnet"
USB_MODULES="xhci_pci xhci_hcd ehci_pci ehci_hcd ohci_pci uhci_hcd usbhid hid_generic usb_storage uas"
DISK_MODULES="ahci ata_piix sd_mod nvme virtio_blk virtio_scsi virtio_pci"
# Filesystems the agent mounts to grow them (xfs_growfs, btrfs filesystem resize): packed with their
# closure like the drivers above, but not loaded at boot; the agent modprobes one when it needs it.
FS_MODULES="xfs btrfs"
# efivarfs: the client reads the firmware's SecureBoot variable for its hardware report.
FW_MODULES="efivarfs"
BOOT_MODULES="$NIC_MODULES $USB_MODULES $DISK_MODULES $FW_MODULES"
MODULES="$BOOT_MODULES $FS_MODULES"
FIRMWARE_PACKAGES="firmware-realtek firmware-bnx2x firmware-misc-nonfree"
# Only the firmware for the drivers above goes in; firmware-misc-nonfree alone is hundreds of MB.
FIRMWARE_DIRS="rtl_nic bnx2x tigon intel/ice qed"

log() { printf 'build: %s\n' "$*"; }
warn() { printf 'build: WARNING: %s\n' "$*" >&2; }
die() { printf 'build: ERROR: %s\n' "$*" >&2; exit 1; }

# ---- stamp ------------------------------------------------------------------------------------
# Which netclone built this client, from which sources. `netclone serve` compares the stamp in
# manifest.txt with its own and says when the client is out of date; src/serve/boot-files.ts
# (CLIENT_SOURCES) hashes the same inputs the same way. Whatever else this build puts into the
# initramfs from the checkout belongs in both lists. `build.sh --print-stamp` prints it and exits.
# The agent's sources are all of src/agent, the modules of ours it imports and package-lock.json (which
# pins the zstd-napi it ships); src/lib is listed whole so the list cannot go stale when the agent
# starts importing another helper there.
STAMP_INPUTS=(boot/build.sh boot/client src/agent src/imaging/chunk-format.ts src/imaging/disk-layout.ts src/imaging/partitions.ts
              src/imaging/layout-plan.ts src/imaging/partition-write.ts src/imaging/domain-map.ts src/transport/chunk-wire.ts src/lib package-lock.json)
print_stamp() {
  local root version
  root=$(cd "$BOOT_DIR/.." && pwd)
  version=$(sed -n 's/^  "version": "\([^"]*\)".*/\1/p' "$root/package.json" | head -n1)
  [ -n "$version" ] || die "no \"version\" in $root/package.json (run from a netclone checkout)"
  echo "netclone-version: $version"
  echo "sources: sha256:$(cd "$root" && find "${STAMP_INPUTS[@]}" -type f ! -name '*.md' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
}
if [ "${1:-}" = --print-stamp ]; then print_stamp; exit 0; fi

# ---- host tools -------------------------------------------------------------------------------
# The programs the imaging agent runs on a PC's partitions (issue 12), as program:package. They ship
# from the build host's installed packages with their ldd libraries, as nbdcopy does. partclone.<fs>
# lists the used blocks of a filesystem (-D); ntfsresize and resize2fs/e2fsck give a filesystem's
# minimum size and grow it; util-linux's blkid, mkswap, blockdev and losetup (package mount) replace busybox's
# applets, which lack options the agent passes (blkid -p -o export, losetup --sizelimit, mkswap -U -L).
DISK_TOOLS="partclone.ntfs:partclone partclone.extfs:partclone partclone.fat:partclone partclone.exfat:partclone
            partclone.xfs:partclone partclone.btrfs:partclone partclone.f2fs:partclone partclone.hfsp:partclone
            ntfsresize:ntfs-3g ntfsfix:ntfs-3g ntfslabel:ntfs-3g resize2fs:e2fsprogs e2fsck:e2fsprogs dumpe2fs:e2fsprogs
            blkid:util-linux losetup:mount mkswap:util-linux blockdev:util-linux blkdiscard:util-linux"
# Shipped when the build host has them; never installed by the build (xfsprogs, btrfs-progs: .ci/setup
# and the README's install line install them). The agent grows xfs and btrfs with them (mounted-grow.ts).
OPTIONAL_DISK_TOOLS="xfs_growfs xfs_repair btrfs"

ensure_host_tools() {
  local missing=() cmd pkg
  # shellcheck disable=SC2086
  for pair in cpio:cpio depmod:kmod modprobe:kmod xz:xz-utils gzip:gzip nbdcopy:libnbd-bin nbdinfo:libnbd-bin \
              dpkg-deb:dpkg apt-get:apt apt-cache:apt ldd:libc-bin strip:binutils $DISK_TOOLS; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/sbin:/usr/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    # shellcheck disable=SC2207
    missing=($(printf '%s\n' "${missing[@]}" | sort -u))
    [ "$(id -u)" = 0 ] || die "missing host packages: ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
    log "installing host packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
      || die "apt-get install ${missing[*]} failed; run 'apt-get update' first"
  fi
  export PATH="$PATH:/sbin:/usr/sbin"
}

# ---- package download (cached) ----------------------------------------------------------------
# Extra apt options: empty for the system's sources, or the private non-free-firmware configuration.
APT_OPTS=()

pkg_field() { # pkg field -> value of the candidate version
  apt-cache "${APT_OPTS[@]}" show --no-all-versions "$1" 2>/dev/null | awk -v f="$2:" '$1 == f { print $2; exit }'
}

# Firmware lives in Debian's non-free-firmware component, which a default install's sources often lack.
# A private apt configuration (same mirror and suite as the system's Debian sources) reads that component
# without touching the system's sources. Prints nothing and returns 1 when it cannot be set up.
setup_nonfree_apt() {
  local dir="$CACHE/apt-nonfree" uri suite
  uri=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $2 ~ /\/debian\/?$/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
  suite=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  [ -n "$uri" ] && [ -n "$suite" ] || return 1
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
  printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: non-free-firmware\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$uri" "$suite" >"$dir/netclone-nonfree.sources"
  APT_OPTS=(-o "Dir::Etc::SourceList=$dir/netclone-nonfree.sources" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir/cache")
  apt-get "${APT_OPTS[@]}" update >&2 || { APT_OPTS=(); return 1; }
}

# Prints the path of the cached .deb of the candidate version of $1, downloading it if needed.
fetch_deb() {
  local pkg=$1 ver arch file
  ver=$(pkg_field "$pkg" Version)
  [ -n "$ver" ] || return 1
  arch=$(pkg_field "$pkg" Architecture)
  file="$DEBS/${pkg}_${ver//:/%3a}_${arch}.deb"
  if [ ! -s "$file" ] || [ "$(dpkg-deb -f "$file" Version 2>/dev/null)" != "$ver" ]; then
    rm -f "$file"
    (cd "$DEBS" && apt-get "${APT_OPTS[@]}" download "$pkg=$ver" >&2) || die "apt-get download $pkg=$ver failed (network? apt-get update?)"
    [ -s "$file" ] || die "apt-get download $pkg left no $file"
  fi
  echo "$file"
}

# ---- main -------------------------------------------------------------------------------------
[ -f "$CLIENT_DIR/init" ] || die "$CLIENT_DIR/init not found (run from a netclone checkout)"
# Taken before anything is built: the stamp names the sources this build started from.
STAMP=$(print_stamp)
ensure_host_tools
mkdir -p "$DEBS" "$DIST"
# _apt cannot write into a root-owned cache dir; apt then downloads as root and warns. Harmless: silence it.
chmod 0755 "$DEBS" 2>/dev/null || true

[ -n "$(apt-cache policy linux-image-amd64 2>/dev/null | awk '/Candidate:/ {print $2}')" ] \
  || die "apt knows no linux-image-amd64; run 'apt-get update' first"

KPKG=$(apt-cache depends linux-image-amd64 | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
[ -n "$KPKG" ] || die "cannot resolve the kernel package behind linux-image-amd64 (apt-cache depends)"
KDEB=$(fetch_deb "$KPKG") || die "no candidate version for $KPKG"
BBDEB=$(fetch_deb busybox-static) || die "no candidate version for busybox-static"
log "kernel package: $KPKG $(dpkg-deb -f "$KDEB" Version)"

rm -rf "$WORK"
mkdir -p "$WORK/kernel" "$WORK/busybox" "$ROOTFS"
dpkg -x "$KDEB" "$WORK/kernel"
dpkg -x "$BBDEB" "$WORK/busybox"

MODBASE=lib/modules
[ -d "$WORK/kernel/$MODBASE" ] || MODBASE=usr/lib/modules
KVER=$(ls "$WORK/kernel/$MODBASE" | head -n1)
[ -n "$KVER" ] || die "$KPKG has no $MODBASE/<version> directory"
VMLINUZ="$WORK/kernel/boot/vmlinuz-$KVER"
[ -f "$VMLINUZ" ] || die "$KPKG has no boot/vmlinuz-$KVER"
# depmod -b wants lib/modules under the base directory.
if [ "$MODBASE" = usr/lib/modules ]; then mkdir -p "$WORK/kernel/lib"; ln -sfn ../usr/lib/modules "$WORK/kernel/lib/modules"; fi
depmod -b "$WORK/kernel" "$KVER" || die "depmod on the extracted kernel failed"

# ---- rootfs layout ----------------------------------------------------------------------------
mkdir -p "$ROOTFS"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,var/run,lib/modules/"$KVER",lib/firmware,lib64,usr/share/netclone}
install -m 0755 "$WORK/busybox/bin/busybox" "$ROOTFS/bin/busybox"
for applet in $("$ROOTFS/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$ROOTFS/bin/$applet"
done
# The kernel runs /sbin/modprobe for on-demand module loads (e.g. PHY drivers).
ln -sf ../bin/busybox "$ROOTFS/sbin/modprobe"
install -m 0755 "$CLIENT_DIR/init" "$ROOTFS/init"
install -m 0755 "$CLIENT_DIR/udhcpc.script" "$ROOTFS/usr/share/netclone/udhcpc.script"
mkdir -p "$ROOTFS/usr/share/netclone/lib"
install -m 0644 "$CLIENT_DIR"/lib/*.sh "$ROOTFS/usr/share/netclone/lib/"

# ---- the imaging agent: Node, the compiled agent and the zstd addon ----------------------------
# A chunks-transport task runs src/agent on Node (boot/client/README.md). /opt/netclone mirrors a
# checkout: dist/ holds the compiled agent and exactly the modules of ours it imports, node_modules/
# the packages those import, and package.json marks the .js files as ES modules.
ROOT=$(cd "$BOOT_DIR/.." && pwd)
AGENT_HOME=/opt/netclone
# The packages the agent may import, shipped with what they need at run time (not their sources).
AGENT_PACKAGES="zstd-napi"
NODE_BIN=$(command -v node || true)
[ -n "$NODE_BIN" ] || die "no node on PATH; the imaging agent ships the build host's Node 20 (install nodejs, then npm ci)"
NODE_BIN=$(readlink -f "$NODE_BIN")
TSC="$ROOT/node_modules/typescript/bin/tsc"
[ -f "$TSC" ] || die "TypeScript is not installed in $ROOT/node_modules; run 'npm ci' first"

# Compiles the agent on its own, into the work tree: what ships never depends on whether dist/ was
# rebuilt after the last edit, and a type error anywhere else in the checkout does not block it.
compile_agent() {
  local out=$1 entries
  entries=$(cd "$ROOT" && find src/agent -name '*.ts' ! -name '*.d.ts' | LC_ALL=C sort)
  [ -n "$entries" ] || die "no agent sources in $ROOT/src/agent"
  # shellcheck disable=SC2086
  node -e '
    const [root, out, ...entries] = process.argv.slice(1);
    process.stdout.write(JSON.stringify({
      extends: `${root}/tsconfig.json`,
      compilerOptions: { rootDir: `${root}/src`, outDir: out, noEmit: false, sourceMap: false, declaration: false },
      files: entries.map((e) => `${root}/${e}`), include: [],
    }));' "$ROOT" "$out" $entries >"$WORK/agent-tsconfig.json"
  node "$TSC" -p "$WORK/agent-tsconfig.json" >"$WORK/agent-tsc.log" 2>&1 \
    || die "compiling the agent (src/agent) failed:"$'\n'"$(head -n 20 "$WORK/agent-tsc.log")"
}

# Prints "file REL" for every compiled module the agent's modules reach by import (REL under the
# compile output) and "package NAME" for every package they import. TypeScript's own import scanner
# reads the compiled JS, so the list follows the code. Every module under agent/ is a root because
# worker threads are started by a computed path (lib/worker.ts), which no scanner can follow.
agent_closure() {
  (cd "$ROOT" && node --input-type=module -e '
    import { existsSync, readFileSync, readdirSync } from "node:fs";
    import { isBuiltin } from "node:module";
    import path from "node:path";
    import ts from "typescript";
    const out = path.resolve(process.argv[1]);
    const queue = readdirSync(path.join(out, "agent"), { recursive: true })
      .filter((f) => f.endsWith(".js")).map((f) => path.join(out, "agent", f));
    const files = new Set(), packages = new Set();
    while (queue.length > 0) {
      const file = queue.pop();
      if (files.has(file)) continue;
      files.add(file);
      for (const { fileName: spec } of ts.preProcessFile(readFileSync(file, "utf8"), true, true).importedFiles) {
        if (spec.startsWith(".")) {
          const target = path.resolve(path.dirname(file), spec);
          if (!target.startsWith(out + path.sep) || !existsSync(target)) {
            console.error(`${path.relative(out, file)} imports ${spec}, which is not among the compiled sources`);
            process.exit(1);
          }
          queue.push(target);
        } else if (!isBuiltin(spec)) {
          packages.add(spec.split("/").slice(0, spec.startsWith("@") ? 2 : 1).join("/"));
        }
      }
    }
    for (const f of [...files].sort()) console.log(`file ${path.relative(out, f)}`);
    for (const p of [...packages].sort()) console.log(`package ${p}`);
  ' "$1")
}

# copy_package NAME DEST: package.json, licence files, the JS outside its sources and native addons.
copy_package() {
  local src="$ROOT/node_modules/$1" dest=$2 f
  [ -f "$src/package.json" ] || die "package $1 is not installed in $ROOT/node_modules; run 'npm ci' first"
  mkdir -p "$dest"
  while read -r f; do
    mkdir -p "$dest/$(dirname "$f")"
    cp "$src/$f" "$dest/$f"
  done < <(cd "$src" && find . \( -path ./src -o -path ./deps -o -path ./node_modules -o -path ./test -o -path ./build \) -prune \
             -o -type f \( -name '*.js' -o -name '*.cjs' -o -name '*.json' -o -name 'LICENSE*' -o -name 'NOTICE*' \) -print)
  if [ -d "$src/build" ]; then
    while read -r f; do
      mkdir -p "$dest/$(dirname "$f")"
      strip --strip-unneeded -o "$dest/$f" "$src/$f" || die "strip of $src/$f failed"
    done < <(cd "$src" && find build/Release -maxdepth 1 -name '*.node' 2>/dev/null)
  fi
}

compile_agent "$WORK/agent-js"
agent_closure "$WORK/agent-js" >"$WORK/agent-closure.txt" || die "following the agent's imports failed (see above)"
grep -q '^file agent/' "$WORK/agent-closure.txt" || die "the compiled agent has no modules under agent/"
AGENT_ROOT="$ROOTFS$AGENT_HOME"
mkdir -p "$AGENT_ROOT/dist" "$AGENT_ROOT/node_modules"
while read -r what name; do
  case "$what" in
    file) mkdir -p "$AGENT_ROOT/dist/$(dirname "$name")"; install -m 0644 "$WORK/agent-js/$name" "$AGENT_ROOT/dist/$name" ;;
    package)
      case " $AGENT_PACKAGES " in *" $name "*) ;; *)
        die "the agent imports package $name, which build.sh does not ship; add it to AGENT_PACKAGES (check it needs nothing beyond its JS and addons) or drop the import" ;;
      esac
      copy_package "$name" "$AGENT_ROOT/node_modules/$name" ;;
  esac
done <"$WORK/agent-closure.txt"
printf '{"name":"netclone-agent","version":"%s","private":true,"type":"module"}\n' \
  "$(sed -n 's/^netclone-version: //p' <<<"$STAMP")" >"$AGENT_ROOT/package.json"
# Node's symbol and debug tables are a sixth of its size and unused at run time; the dynamic symbols
# native addons link against (napi_*) are not touched by --strip-unneeded.
strip --strip-unneeded -o "$ROOTFS/usr/bin/node" "$NODE_BIN" || die "strip of $NODE_BIN failed"
chmod 0755 "$ROOTFS/usr/bin/node"

# ---- host programs: nbdcopy, nbdinfo and the disk tools, at their host paths ------------------
HOST_PROGRAMS=(/usr/bin/nbdcopy /usr/bin/nbdinfo)
for pair in $DISK_TOOLS; do
  path=$(command -v "${pair%%:*}") || die "${pair%%:*} (package ${pair#*:}) is not on the build host; apt-get install ${pair#*:}"
  HOST_PROGRAMS+=("$path")
done
for tool in $OPTIONAL_DISK_TOOLS; do
  if path=$(command -v "$tool"); then HOST_PROGRAMS+=("$path"); else log "optional disk tool $tool not on the build host: not shipped"; fi
done
for bin in "${HOST_PROGRAMS[@]}"; do
  mkdir -p "$ROOTFS$(dirname "$bin")"
  install -m 0755 "$(readlink -f "$bin")" "$ROOTFS$bin"
  # init's PATH starts with /bin, where busybox's applet of the same name would win. From ash (or
  # busybox env) the name still runs the applet, which busybox prefers over PATH; the agent starts
  # these from Node (execvp, no shell), which finds the program.
  if [ -L "$ROOTFS/bin/${bin##*/}" ] && [ "$ROOTFS/bin/${bin##*/}" != "$ROOTFS$bin" ]; then rm -f "$ROOTFS/bin/${bin##*/}"; fi
done
# partclone writes its log to /var/log/partclone.log unless told otherwise. ntfsresize, ntfsfix and
# resize2fs refuse to touch a filesystem when they cannot tell whether it is mounted; init mounts /proc.
mkdir -p "$ROOTFS/var/log"
ln -sfn /proc/self/mounts "$ROOTFS/etc/mtab"

# ---- shared libraries of the host programs, node and the addons (found with ldd) ---------------
LIBS_FILE="$WORK/libs.txt"
: >"$LIBS_FILE"
NATIVE=("${HOST_PROGRAMS[@]}" "$NODE_BIN")
while read -r f; do NATIVE+=("$f"); done < <(find "$AGENT_ROOT/node_modules" -name '*.node')
for bin in "${NATIVE[@]}"; do
  out=$(ldd "$bin") || die "ldd $bin failed: $out"
  printf '%s\n' "$out" | awk '/=>/ { print $3 } !/=>/ && $1 ~ /^\// { print $1 }' >>"$LIBS_FILE"
  grep -q 'not found' <<<"$out" && die "$bin needs a library the build host lacks: $(grep 'not found' <<<"$out" | head -n1)"
done
sort -u "$LIBS_FILE" -o "$LIBS_FILE"
while read -r lib; do
  [ -n "$lib" ] || continue
  real=$(readlink -f "$lib")
  [ -f "$real" ] || die "library $lib (needed by ${NATIVE[*]}) not found"
  mkdir -p "$ROOTFS$(dirname "$lib")"
  cp -L "$real" "$ROOTFS$lib"
done <"$LIBS_FILE"
LOADER=$(grep -m1 'ld-linux' "$LIBS_FILE") || die "ldd named no dynamic loader for nbdcopy"
TREE_LIB_DIRS=$(while read -r lib; do printf '%s%s\n' "$ROOTFS" "$(dirname "$lib")"; done <"$LIBS_FILE" | sort -u | paste -sd:)

# The tree's loader searches the tree's library directories first and falls back to the host's: a
# library a host program resolves outside the tree would be missing on the PC.
for bin in "${HOST_PROGRAMS[@]}"; do
  resolved=$("$ROOTFS$LOADER" --library-path "$TREE_LIB_DIRS" --list "$ROOTFS$bin" 2>&1) || die "the tree's loader cannot list $bin: $resolved"
  outside=$(awk -v root="$ROOTFS/" '$2 == "=>" && index($3, root) != 1 { print $1 " => " $3 }' <<<"$resolved")
  [ -z "$outside" ] || die "$bin needs libraries the initrd tree lacks: $outside"
done

# The tree's node, with only the tree's libraries, must import the agent's chunk codec and its zstd
# addon and run a worker thread: a PC would otherwise find out at its first chunks task.
tree_node() {
  "$ROOTFS$LOADER" --library-path "$TREE_LIB_DIRS" "$ROOTFS/usr/bin/node" "$@"
}
smoke=$(tree_node --input-type=module -e '
  import { Worker } from "node:worker_threads";
  const { ChunkCodecContext, chunkName, maxChunkFileSize, CHUNK_HEADER_SIZE } = await import(process.argv[1]);
  const data = Buffer.alloc(1 << 20, "netclone ");
  const [head, payload] = new ChunkCodecContext().encode(data, 3, Buffer.alloc(maxChunkFileSize(data.length) - CHUNK_HEADER_SIZE));
  const back = new ChunkCodecContext().decodeChecked(Buffer.concat([head, payload]), chunkName(data), "full");
  if (!back.equals(data)) throw new Error("chunk round trip changed the bytes");
  const w = new Worker(`import("node:worker_threads").then((m) => m.parentPort.postMessage(7))`, { eval: true });
  const got = await new Promise((resolve, reject) => { w.once("message", resolve); w.once("error", reject); });
  await w.terminate();
  console.log(`node ${process.version}: chunk round trip ok (${payload.length} bytes), worker ${got}`);
' "$AGENT_ROOT/dist/imaging/chunk-format.js" 2>&1) || die "the initramfs node cannot run the agent's chunk codec: $smoke"
log "$smoke"

# ---- kernel modules ---------------------------------------------------------------------------
KMODDIR="$WORK/kernel/lib/modules/$KVER"
MOD_LIST="$WORK/modules.txt"
BUILTIN_LIST="$WORK/builtin.txt"
: >"$MOD_LIST"; : >"$BUILTIN_LIST"
for m in $MODULES; do
  out=$(modprobe -d "$WORK/kernel" -S "$KVER" --show-depends "$m" 2>&1) \
    || die "module $m not found in $KPKG: $out"
  printf '%s\n' "$out" | awk '$1 == "insmod" { print $2 }' >>"$MOD_LIST"
  printf '%s\n' "$out" | awk '$1 == "builtin" { print $2 }' >>"$BUILTIN_LIST"
done
sort -u "$MOD_LIST" -o "$MOD_LIST"
sort -u "$BUILTIN_LIST" -o "$BUILTIN_LIST"
while read -r path; do
  rel=${path#"$KMODDIR"/}
  dest="$ROOTFS/lib/modules/$KVER/$rel"
  mkdir -p "$(dirname "$dest")"
  case "$rel" in
    # busybox insmod reads plain .ko only reliably; decompress so any busybox build works.
    *.ko.xz)  xz -dc "$path" >"${dest%.xz}" ;;
    *.ko.zst) command -v zstd >/dev/null || die "module $rel is zstd-compressed; install zstd"; zstd -qdc "$path" >"${dest%.zst}" ;;
    *.ko.gz)  gzip -dc "$path" >"${dest%.gz}" ;;
    *)        cp "$path" "$dest" ;;
  esac
done <"$MOD_LIST"
cp "$KMODDIR/modules.builtin" "$KMODDIR/modules.builtin.modinfo" "$KMODDIR/modules.order" "$ROOTFS/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$ROOTFS" "$KVER" || die "depmod on the initrd tree failed"
# The load order the client uses: the requested modules; busybox modprobe pulls each one's deps from modules.dep.
printf '%s\n' $BOOT_MODULES >"$ROOTFS/usr/share/netclone/modules.load"

# ---- firmware (non-free-firmware component; optional) -----------------------------------------
FIRMWARE_NOTE=""
FW_VERSIONS=""
if [ -z "$(pkg_field firmware-realtek Version)" ]; then
  log "firmware: reading Debian's non-free-firmware component through a private apt configuration"
  setup_nonfree_apt || warn "could not set up the non-free-firmware component (no Debian source in /etc/apt?)"
fi
for fw in $FIRMWARE_PACKAGES; do
  if [ -z "$(pkg_field "$fw" Version)" ]; then
    FIRMWARE_NOTE="firmware skipped: $fw not available (add the non-free-firmware component to the apt sources and run apt-get update)"
    warn "$FIRMWARE_NOTE"
    warn "NICs that need firmware (bnx2x always; some Realtek/Broadcom chips) may not work with this client"
    FW_VERSIONS=""
    break
  fi
  deb=$(fetch_deb "$fw")
  mkdir -p "$WORK/fw/$fw"
  dpkg -x "$deb" "$WORK/fw/$fw"
  FW_VERSIONS="$FW_VERSIONS$fw $(dpkg-deb -f "$deb" Version)"$'\n'
done
APT_OPTS=()
if [ -z "$FIRMWARE_NOTE" ]; then
  for fw in $FIRMWARE_PACKAGES; do
    for d in $FIRMWARE_DIRS; do
      for base in lib/firmware usr/lib/firmware; do
        src="$WORK/fw/$fw/$base/$d"
        if [ -d "$src" ]; then mkdir -p "$ROOTFS/lib/firmware/$d"; cp -a "$src/." "$ROOTFS/lib/firmware/$d/"; fi
      done
    done
  done
fi

# ---- pack ------------------------------------------------------------------------------------
# Fixed mtimes and sorted names keep the archive reproducible for identical inputs.
# gzip -6, chosen by measurement (2026-12-04, this 2-core host shared with other jobs, load 8-22, the
# 153 MB tree with Node; unpack = "Trying to unpack" to "Freeing initrd memory" in the kernel log):
#   compressor     initrd    build-host compress   kernel unpack in a QEMU TCG VM (-m 512 -smp 1)
#   gzip -6        58.3 MB    13 s                  4.8, 6.3, 6.2 s
#   gzip -9        58.0 MB    46 s                  (same decoder)
#   zstd -9        50.8 MB    11 s                  (not booted; zstd decodes about as fast at any level)
#   zstd -19       44.5 MB   169 s                  7.0, 7.3 s
#   xz -6          39.8 MB   121 s                 22.8 s
# xz would save 18 MB on the wire but costs 18 s of every TCG boot (and seconds on a slow PC); zstd
# saves 14 MB (~0.1 s at gigabit) for 2 s more unpacking and a much slower build. gzip -9 buys 0.5 %.
find "$ROOTFS" -exec touch -h -d @0 {} +
(cd "$ROOTFS" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) \
  | gzip -6 -n >"$WORK/initrd.img" || die "packing the initrd failed"
# What a PC downloads at every boot: keep it well under what a PXE loader and a small PC's RAM take.
INITRD_LIMIT=80000000
[ "$(stat -c %s "$WORK/initrd.img")" -lt "$INITRD_LIMIT" ] \
  || die "the initrd is $(stat -c %s "$WORK/initrd.img") bytes, over the $INITRD_LIMIT-byte limit; see what grew in the tree ($ROOTFS)"
install -m 0644 "$VMLINUZ" "$DIST/vmlinuz.new"
install -m 0644 "$WORK/initrd.img" "$DIST/initrd.img.new"

# ---- manifest --------------------------------------------------------------------------------
host_pkg_version() { dpkg-query -W -f '${Package}:${Architecture} ${Version}\n' "$1" 2>/dev/null | head -n1; }
{
  echo "# netclone thin client build manifest"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "kernel-version: $KVER"
  echo "$STAMP"
  echo "initrd-bytes: $(stat -c %s "$DIST/initrd.img.new")"
  echo
  echo "[packages]"
  echo "$KPKG $(dpkg-deb -f "$KDEB" Version)"
  echo "busybox-static $(dpkg-deb -f "$BBDEB" Version)"
  # The host programs, node and their libraries come from the host's installed packages. dpkg names
  # a merged-/usr file by the path its package shipped (/sbin/resize2fs for /usr/sbin/resize2fs).
  owners=$( { printf '%s\n' "${HOST_PROGRAMS[@]}"; echo "$NODE_BIN"; cat "$LIBS_FILE"; } | while read -r f; do
      real=$(readlink -f "$f")
      dpkg -S "$real" 2>/dev/null || dpkg -S "$f" 2>/dev/null || dpkg -S "${real#/usr}" 2>/dev/null || dpkg -S "${f#/usr}" 2>/dev/null || true
    done | cut -d: -f1 | sort -u)
  for p in $owners; do host_pkg_version "$p"; done
  printf '%s' "$FW_VERSIONS"
  echo "node $("$NODE_BIN" --version) ($NODE_BIN, stripped)"
  echo
  echo "[host programs]"
  printf '%s\n' "${HOST_PROGRAMS[@]}"
  echo
  echo "[agent files]"
  (cd "$ROOTFS" && find "./${AGENT_HOME#/}" -type f | sed 's|^\./||' | LC_ALL=C sort)
  echo
  echo "[firmware]"
  if [ -n "$FIRMWARE_NOTE" ]; then echo "WARNING: $FIRMWARE_NOTE"; else echo "included: $FIRMWARE_DIRS"; fi
  echo
  echo "[modules requested]"
  printf '%s\n' $MODULES
  echo
  echo "[modules built into the kernel]"
  cat "$BUILTIN_LIST"
  echo
  echo "[module files]"
  (cd "$ROOTFS/lib/modules/$KVER" && find . -name '*.ko' | sed 's|^\./||' | LC_ALL=C sort)
  echo
  echo "[libraries]"
  cat "$LIBS_FILE"
  echo
  echo "[outputs]"
  echo "vmlinuz $(stat -c %s "$DIST/vmlinuz.new") sha256:$(sha256sum "$DIST/vmlinuz.new" | cut -d' ' -f1)"
  echo "initrd.img $(stat -c %s "$DIST/initrd.img.new") sha256:$(sha256sum "$DIST/initrd.img.new" | cut -d' ' -f1)"
} >"$DIST/manifest.txt.new"

mv -f "$DIST/vmlinuz.new" "$DIST/vmlinuz"
mv -f "$DIST/initrd.img.new" "$DIST/initrd.img"
mv -f "$DIST/manifest.txt.new" "$DIST/manifest.txt"
rm -rf "$WORK/kernel" "$WORK/fw"

END=$(date +%s)
log "kernel $KVER, $(wc -l <"$MOD_LIST") modules, initrd $(( $(stat -c %s "$DIST/initrd.img") / 1024 )) KiB"
log "wrote $DIST/vmlinuz, $DIST/initrd.img, $DIST/manifest.txt in $((END - START)) s"
