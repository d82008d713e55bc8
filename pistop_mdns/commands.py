"""Command lines, as plain tuples: what the tool would type.

Nothing here runs anything (executor.py does); unit tests compare these
tuples exactly, which is how the commands that cannot run on a test machine
(NFS mounts, systemctl, power-off) are tested.
"""

from __future__ import annotations

Argv = tuple[str, ...]


def mount(fstype: str, options: str, source: str, target: str) -> Argv:
    argv: list[str] = ["mount", "-t", fstype]
    if options:
        argv += ["-o", options]
    return (*argv, source, target)


def umount(target: str, *, lazy: bool = False) -> Argv:
    # pistop's choice: always force (an NFS server may be gone); lazy only
    # when powering off with FORCE_UMOUNT, so a hung server cannot hold us.
    return ("umount", "-fl" if lazy else "-f", target)


def mountpoint(target: str) -> Argv:
    return ("mountpoint", "-q", target)


def nfs_ls(url: str) -> Argv:
    return ("nfs-ls", url)


def systemctl(verb: str, *units: str) -> Argv:
    return ("systemctl", verb, *units)


def systemctl_is_active(unit: str) -> Argv:
    return ("systemctl", "is-active", "--quiet", unit)


def systemctl_is_system_running() -> Argv:
    return ("systemctl", "is-system-running")


def systemctl_list_jobs() -> Argv:
    return ("systemctl", "list-jobs", "--no-legend", "--plain")


def svc(flag: str, service_dir: str) -> Argv:
    return ("svc", flag, service_dir)


def svstat(service_dir: str) -> Argv:
    return ("svstat", service_dir)


def sync() -> Argv:
    return ("sync",)


def uhubctl_off(location: str, ports: str = "") -> Argv:
    argv = ["uhubctl", "-a", "0", "-l", location]
    if ports:
        argv += ["-p", ports]
    return tuple(argv)
