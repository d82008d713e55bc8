# Debian 12 packages, sourced by tools/demo and tools/test.
# What pistop-mdns itself needs (exactly what `apt install pistop-mdns` pulls in):
RUNTIME_PACKAGES="python3 python3-zeroconf python3-netifaces python3-click python3-sh"
# What the demo's simulated LAN uses: namespaces, and the real chain in them (see
# pistop_mdns/lan_music.py): songs made with sox, nfs-ganesha with rpcbind, mpd
# and mpc, daemontools, libnfs's nfs-ls.
DEMO_PACKAGES="iproute2 util-linux iputils-ping mpd mpc sox daemontools
  nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils"
# What the tests use: real peers and components, the second (PyPI) Python stack, packaging.
TEST_PACKAGES="python3-pytest python3-hypothesis python3-venv python3-dev gcc
  avahi-daemon avahi-utils dbus ucspi-tcp autofs nfs-common rsync at nftables flac vorbis-tools tcpdump
  systemd man-db debhelper dh-python pybuild-plugin-pyproject python3-all
  python3-setuptools lintian debootstrap fakeroot dpkg-dev make
  qemu-system-x86 qemu-utils e2fsprogs"

apt_install() {
    # Services must not start in the machine's own namespaces when installed;
    # Debian's policy-rc.d convention says so (exit 101 = "not allowed").
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
    fi
    missing=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing
    # The NFS servers run only inside the demo's and the tests' namespaces;
    # installing them also enabled them at boot, on every interface: undo that
    # for what was installed just now (what was there before stays as it was).
    command -v systemctl >/dev/null || return 0
    for p in $missing; do
        case $p in
            nfs-ganesha) systemctl disable --quiet nfs-ganesha.service || true ;;
            rpcbind) systemctl disable --quiet rpcbind.service rpcbind.socket || true ;;
        esac
    done
}

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "$0: needs root (it installs Debian packages and builds network namespaces): run sudo $0" >&2
        exit 2
    fi
}
