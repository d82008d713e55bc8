"""The music chain's requirements: what the demo checks for and what tools/demo installs agree."""

from __future__ import annotations

import re
from pathlib import Path

from pistop_mdns import lan_music

ROOT = Path(__file__).resolve().parents[2]


def test_missing_packages_names_the_debian_packages_once_each():
    absent = {"svc", "svstat", "nfs-ls"}
    found = lan_music.missing_packages(which=lambda p: None if p in absent else f"/usr/bin/{p}",
                                       find=lambda pattern: [])
    assert found == ["daemontools", "libnfs-utils", "nfs-ganesha-vfs"]


def test_nothing_is_missing_when_every_program_and_the_vfs_plugin_are_there():
    assert lan_music.missing_packages(which=lambda p: f"/usr/bin/{p}",
                                      find=lambda pattern: ["/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so"]) == []


def test_tools_demo_installs_every_package_the_full_demo_needs():
    deps = (ROOT / "tools" / "deps.sh").read_text()
    demo_packages = set(re.search(r'DEMO_PACKAGES="([^"]*)"', deps).group(1).split())
    needed = set(lan_music.PROGRAMS.values()) | {lan_music.GANESHA_VFS[1]}
    assert needed <= demo_packages, f"add {sorted(needed - demo_packages)} to DEMO_PACKAGES in tools/deps.sh"
