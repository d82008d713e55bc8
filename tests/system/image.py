"""The Debian 12 guest image the system tests boot: made once, cached, reused.

A minimal bookworm (the packaging tests' debootstrapped tarball) gets a
kernel, systemd, kernel NFS, autofs, mpd and pistop-mdns's Depends, so that
`apt-get install ./pistop-mdns.deb` works offline in the guest. Then three
small pieces of the test bed (TESTBED.md section 9):

- a oneshot unit that reads `pistop.ip=ADDR/24` from the kernel command line
  and gives systemd-networkd eth0's address and a route for multicast (mDNS);
  no default route, no DNS server: nothing can leave the test bridge;
- the runner (runner.py, next to this file): it mounts the host's 9p share at
  /mnt/share and runs the host's queue/N.sh one at a time under a timeout;
- timers masked that would only compete for the guest's one slow CPU.

The image is a raw ext4 file system made by `mkfs.ext4 -d` from a directory
tree (no loop devices), with the kernel and initrd copied out for a direct
kernel boot. It is kept under CACHE/guest-KEY, the key naming everything that
decides its contents; guests boot from qcow2 overlays on it, so it is never
written. apt's .deb cache (CACHE/archives) is shared with the packaging tests.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.packaging.support import CACHE, CACHE_MAX_AGE, SUITE, FreshRoot, base_tarball, remove_tree, run

HERE = Path(__file__).resolve().parent

PACKAGES = (
    # a bootable machine with systemd as PID 1
    "systemd-sysv", "linux-image-amd64", "initramfs-tools", "udev", "kmod", "dbus", "procps", "iproute2",
    "iputils-ping", "psmisc",
    # the music house: kernel NFS server and client, autofs, mpd, libnfs's nfs-ls (mpd mode's ready check)
    "nfs-kernel-server", "nfs-common", "autofs", "mpd", "mpc", "libnfs-utils", "rsync",
    # pistop-mdns's Depends (offline install of the .deb)
    "python3", "python3-zeroconf", "python3-netifaces", "python3-click", "python3-sh",
)
SIZE = "3G"  # a sparse file; the tree is about 1 GiB

# Only competitors for the CPU in a guest that lives for minutes.
MASKED = ("apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer", "e2scrub_all.timer",
          "fstrim.timer", "dpkg-db-backup.timer", "e2scrub_reap.service")
# The scenarios enable what each machine runs, as its owner would.
DISABLED = ("mpd.service", "mpd.socket", "nfs-server.service")

NETWORK_SCRIPT = """#!/bin/sh
# eth0's address from the kernel command line (pistop.ip=198.18.0.11/24), for
# systemd-networkd; a route for multicast so mDNS works, and nothing else.
set -eu
address=$(tr ' ' '\\n' < /proc/cmdline | sed -n 's/^pistop\\.ip=//p')
[ -n "$address" ] || { echo "no pistop.ip= on the kernel command line" >&2; exit 1; }
mkdir -p /run/systemd/network
cat > /run/systemd/network/10-eth0.network <<EOF
[Match]
Name=eth0

[Network]
Address=$address
LinkLocalAddressing=no
IPv6AcceptRA=no

[Route]
Destination=224.0.0.0/4
EOF
"""

NETWORK_UNIT = """[Unit]
Description=test bed: eth0's address from the kernel command line
DefaultDependencies=no
Before=systemd-networkd.service
After=systemd-tmpfiles-setup.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/pistop-test-net

[Install]
WantedBy=systemd-networkd.service
"""

RUNNER_UNIT = """[Unit]
Description=test bed: run the host's scripts from the 9p share
After=local-fs.target

[Service]
ExecStart=/usr/bin/python3 /usr/local/sbin/pistop-test-runner
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class Image:
    disk: Path  # raw ext4, the root file system (/dev/vda)
    kernel: Path
    initrd: Path


def _key(tarball: Path) -> str:
    text = "\n".join([tarball.name, SUITE, SIZE, *PACKAGES, *MASKED, *DISABLED, NETWORK_SCRIPT, NETWORK_UNIT,
                      RUNNER_UNIT, (HERE / "runner.py").read_text(), Path(__file__).read_text()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def guest_image(mirror: str) -> Image:
    """The cached image for this test bed, built first when missing or too old."""
    tarball = base_tarball(mirror)
    directory = CACHE / f"guest-{_key(tarball)}"
    image = Image(directory / "root.img", directory / "vmlinuz", directory / "initrd.img")
    with open(CACHE / "guest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second run waits instead of building it twice
        done = directory / "done"
        if done.exists() and time.time() - done.stat().st_mtime < CACHE_MAX_AGE:
            return image
        work = Path(tempfile.mkdtemp(prefix="guest-", dir=CACHE))
        try:
            _build(work, mirror)
            if directory.exists():
                shutil.rmtree(directory)
            (work / "image").rename(directory)
            (directory / "done").write_text(f"{mirror}\n")
        finally:
            remove_tree(work)
        for old in CACHE.glob("guest-*"):
            if old.is_dir() and old != directory and (old / "done").exists():
                shutil.rmtree(old)
        return image


def _build(work: Path, mirror: str) -> None:
    root = FreshRoot(work, mirror)
    root.unpack()
    root.sh("apt-get update -q", timeout=600)
    root.sh(f"apt-get install -y -q --no-install-recommends {' '.join(PACKAGES)}", timeout=2400)
    root.sh("apt-get autoclean -q", timeout=120)  # the shared archive cache keeps current versions only
    _configure(root)
    out = work / "image"
    out.mkdir()
    kernels = sorted((root.path / "boot").glob("vmlinuz-*"))
    initrds = sorted((root.path / "boot").glob("initrd.img-*"))
    if len(kernels) != 1 or len(initrds) != 1:
        raise RuntimeError(f"expected one kernel and one initrd in the guest's /boot, found {kernels} {initrds}")
    shutil.copyfile(kernels[0], out / "vmlinuz")
    shutil.copyfile(initrds[0], out / "initrd.img")
    run(["mkfs.ext4", "-q", "-d", str(root.path), "-L", "root", str(out / "root.img"), SIZE],
        timeout=900, what="mkfs.ext4 -d (the guest's root file system)")
    root.remove()


def _write(root: FreshRoot, path: str, text: str, mode: int = 0o644) -> None:
    target = root.path / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def _configure(root: FreshRoot) -> None:
    _write(root, "/etc/hostname", "guest\n")
    _write(root, "/etc/fstab", "/dev/vda / ext4 rw,noatime 0 1\n")
    # No name server: a name nothing resolves (the house's MusicPI) fails at once.
    _write(root, "/etc/resolv.conf", "")
    _write(root, "/etc/modules-load.d/pistop-test.conf", "9p\n9pnet_virtio\n")
    _write(root, "/usr/local/sbin/pistop-test-net", NETWORK_SCRIPT, 0o755)
    _write(root, "/etc/systemd/system/pistop-test-net.service", NETWORK_UNIT)
    _write(root, "/usr/local/sbin/pistop-test-runner", (HERE / "runner.py").read_text(), 0o755)
    _write(root, "/etc/systemd/system/pistop-test-runner.service", RUNNER_UNIT)
    units = "pistop-test-net.service pistop-test-runner.service systemd-networkd.service"
    root.sh(f"systemctl enable {units} && systemctl mask {' '.join(MASKED)} && "
            f"systemctl disable {' '.join(DISABLED)}")
    # Each guest gets its own machine-id on the kernel command line; an empty
    # file here would make systemd treat every boot as a first boot.
    _write(root, "/etc/machine-id", "0" * 31 + "1\n", 0o444)
    (root.path / "usr/sbin/policy-rc.d").unlink()  # the guest's own apt may start and stop its units
    for stale in ("var/lib/apt/lists", "var/cache/apt"):
        for path in (root.path / stale).glob("*"):
            if path.is_file():
                path.unlink()
    os.sync()
