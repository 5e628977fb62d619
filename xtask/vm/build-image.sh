#!/usr/bin/env bash
# Builds the virtual-machine tier's guest: a minimal Debian 12 root file system with systemd as
# PID 1, PostgreSQL (for the package's embedded default), bpftool and jq (for the checks), and
# Debian's own kernels 6.1 (bookworm) and 6.12 (bookworm-security), each with an initramfs that
# boots from a virtio disk. Output in OUT: rootfs.img (raw ext4) and vmlinuz-*/initrd.img-*.
#
# The package mirror is the host's own (read from its apt sources): nothing here names one.
# xtask reruns this only when this file (or the guest unit below) changes.
set -euo pipefail
out=${1:?usage: build-image.sh OUT}
work="$out/rootfs"
mkdir -p "$out"
rm -rf "$work"

# The host's Debian mirror and security mirror, from its deb822 or one-line sources.
mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '$2 !~ /security/ {print $2; exit}')
security=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '$2 ~ /security/ {print $2; exit}')
if [ -z "$mirror" ]; then
	mirror=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
	security=$(awk '$1 == "deb" && $0 ~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
[ -n "$mirror" ] || { echo "build-image: no Debian mirror in the host's apt sources" >&2; exit 1; }
[ -n "$security" ] || security="$mirror-security"

echo "build-image: debootstrap (about 2 minutes)"
debootstrap --variant=minbase \
	--include=systemd-sysv,udev,kmod,initramfs-tools,dbus,procps,iproute2,postgresql,adduser,init-system-helpers,bpftool,jq,ca-certificates \
	bookworm "$work" "$mirror" >"$out/debootstrap.log" 2>&1 || { tail -20 "$out/debootstrap.log" >&2; exit 1; }

cat >"$work/etc/apt/sources.list" <<SRC
deb $mirror bookworm main
deb $security bookworm-security main
SRC
# No service starts inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$work/usr/sbin/policy-rc.d"
chmod 755 "$work/usr/sbin/policy-rc.d"
# The initramfs needs only what boots from a virtio disk.
cat >"$work/etc/initramfs-tools/conf.d/agentmon-vm" <<'CONF'
MODULES=list
COMPRESS=gzip
CONF
printf 'virtio_pci\nvirtio_blk\next4\n' >>"$work/etc/initramfs-tools/modules"

mount -t proc proc "$work/proc"
trap 'umount "$work/proc" 2>/dev/null || true' EXIT
echo "build-image: the kernels (about a minute)"
chroot "$work" apt-get update -q >"$out/kernels.log" 2>&1
k612=$(chroot "$work" apt-cache search --names-only '^linux-image-6\.12\.[0-9.]*\+deb12-amd64$' | awk '{print $1}' | sort -V | tail -n 1)
[ -n "$k612" ] || { echo "build-image: no linux-image-6.12.*+deb12-amd64 in the archive" >&2; exit 1; }
DEBIAN_FRONTEND=noninteractive chroot "$work" apt-get install -y -q --no-install-recommends linux-image-amd64 "$k612" >>"$out/kernels.log" 2>&1 \
	|| { tail -20 "$out/kernels.log" >&2; exit 1; }
chroot "$work" apt-get clean
umount "$work/proc"
trap - EXIT
rm -f "$work/usr/sbin/policy-rc.d" "$work/etc/apt/sources.list"
rm -rf "$work/var/lib/apt/lists/"*

# The package's embedded default is its own cluster: the system one would only cost boot time.
chroot "$work" pg_dropcluster 15 main 2>/dev/null || true

echo agentmon-vm >"$work/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 agentmon-vm\n' >"$work/etc/hosts"
printf 'host0 /mnt/host 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0\n' >"$work/etc/fstab"
mkdir -p "$work/mnt/host"
# No login prompt, no waiting on a network that is not there.
chroot "$work" systemctl mask serial-getty@ttyS0.service getty@tty1.service systemd-networkd-wait-online.service >/dev/null 2>&1 || true

# The test unit: after boot, run the host's script from the share, then power off.
install -m 0755 "$(dirname "$0")/vm-run" "$work/usr/local/sbin/vm-run"
cat >"$work/etc/systemd/system/agentmon-vmtest.service" <<'UNIT'
[Unit]
Description=agentmon VM tier: run the checks from the host share, then power off
After=multi-user.target
RequiresMountsFor=/mnt/host

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vm-run
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
UNIT
chroot "$work" systemctl enable agentmon-vmtest.service >/dev/null 2>&1

cp "$work"/boot/vmlinuz-* "$work"/boot/initrd.img-* "$out/"
echo "build-image: the disk image"
rm -f "$out/rootfs.img"
mkfs.ext4 -q -L agentmon-vm -d "$work" "$out/rootfs.img" 6G
rm -rf "$work"
ls "$out"
