"""Command lines, as plain tuples: what the tool would type.

Nothing here runs anything (executor.py does); unit tests compare these
tuples exactly, which is how the commands that cannot run on a test machine
(NFS mounts, systemctl, power-off) are tested. Paths and sources come after
`--` wherever the program takes it, so that no value can be read as an option
(they are also validated where they enter).
"""

from __future__ import annotations

Argv = tuple[str, ...]


def mount(fstype: str, options: str, source: str, target: str) -> Argv:
    argv: list[str] = ["mount", "-t", fstype]
    if options:
        argv += ["-o", options]
    return (*argv, "--", source, target)


def umount(target: str, *, lazy: bool = False) -> Argv:
    # pistop's choice: always force (an NFS server may be gone); lazy only
    # when powering off with FORCE_UMOUNT, so a hung server cannot hold us.
    return ("umount", "-fl" if lazy else "-f", "--", target)


def umount_detach(target: str) -> Argv:
    """Unmount from a server that cannot answer: forced (the kernel aborts the
    calls waiting on the server) and lazy (the mount leaves the tree at once).
    -i: no /sbin/umount.nfs helper, which would try to reach the server first."""
    return ("umount", "-i", "-f", "-l", "--", target)


def mountpoint(target: str) -> Argv:
    return ("mountpoint", "-q", "--", target)


def nfs_ls(url: str) -> Argv:
    return ("nfs-ls", url)


def systemctl(verb: str, *units: str) -> Argv:
    return ("systemctl", verb, *units)


def systemctl_no_block(verb: str, *units: str) -> Argv:
    """Queue the job and return at once (systemd carries it out)."""
    return ("systemctl", "--no-block", verb, *units)


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


def unmount_disk(target: str) -> Argv:
    # Never forced, never lazy: a lazy unmount "succeeds" on a busy disk that
    # stays in use, and USB power is cut only after a real unmount.
    return ("umount", "--", target)


def mount_holding(path: str) -> Argv:
    """The mount point of the file system that holds `path`, on one line."""
    return ("findmnt", "-n", "-o", "TARGET", "-T", path)


def kill(pid: int, signal: str = "TERM") -> Argv:
    return ("kill", f"-{signal}", str(pid))


def uhubctl_off(location: str, ports: str = "") -> Argv:
    argv = ["uhubctl", "-a", "0", "-l", location]
    if ports:
        argv += ["-p", ports]
    return tuple(argv)


# ---------------------------------------------------------------- client machine
# Looking into a share goes through a child process with a timeout, never a
# stat() in our own process: on a dead NFS server a stat can block for good.


def mkdir_p(path: str) -> Argv:
    return ("mkdir", "-p", "--", path)


def path_exists(path: str) -> Argv:
    return ("test", "-e", path)


def ls_all(path: str) -> Argv:
    return ("ls", "-A", "--", path)


def stat_identity(*paths: str) -> Argv:
    """device:inode of each path, one a line: equal lines mean the same directory."""
    return ("stat", "-L", "-c", "%d:%i", "--", *paths)


def systemd_unit(name: str) -> str:
    """"mpd" -> "mpd.service"; a name that already has a unit suffix stays."""
    return name if "." in name else f"{name}.service"


def systemd_socket(name: str) -> str:
    """The socket unit that would start service `name` again on the next connection."""
    return name.rsplit(".", 1)[0] + ".socket" if "." in name else f"{name}.socket"


def poweroff(command: tuple[str, ...] | list[str] = ("shutdown", "-h", "now")) -> Argv:
    return tuple(command)


# ---------------------------------------------------------------- backup, update, services


def rsync(options: tuple[str, ...] | list[str], source: str, target: str, *, dry_run: bool = False) -> Argv:
    # --itemize-changes makes a dry run say what it would change.
    extra = ("--dry-run", "--itemize-changes") if dry_run else ()
    return ("rsync", *options, *extra, "--", source, target)


# Keep local changes to configuration files (mpd.conf, which the client
# rewrites, above all) when a package ships a new one: an unattended upgrade
# must never stop at dpkg's conffile question.
APT_KEEP_CONFFILES = ("-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold")


def apt_refresh() -> Argv:
    return ("apt-get", "-qy", "update")


def apt_policy(packages: list[str]) -> Argv:
    return ("apt-cache", "policy", *packages)


def apt_upgrade(packages: list[str]) -> Argv:
    return ("apt-get", "-qy", *APT_KEEP_CONFFILES, "--only-upgrade", "install", *packages)


def dnf_refresh(tool: str = "dnf") -> Argv:
    return (tool, "-q", "makecache")


def dnf_check_update(packages: list[str], tool: str = "dnf") -> Argv:
    return (tool, "-q", "check-update", *packages)


def dnf_upgrade(packages: list[str], tool: str = "dnf") -> Argv:
    return (tool, "-y", "upgrade" if tool == "dnf" else "update", *packages)


def zypper_refresh() -> Argv:
    return ("zypper", "--non-interactive", "refresh")


def zypper_list_updates() -> Argv:
    return ("zypper", "--non-interactive", "list-updates")


def zypper_upgrade(packages: list[str]) -> Argv:
    return ("zypper", "--non-interactive", "update", *packages)


def at_in_one_minute() -> Argv:
    return ("at", "now", "+", "1", "minute")


def systemctl_in_root(root: str, verb: str, *units: str) -> Argv:
    """systemctl acting on the unit files of another root (no service manager involved)."""
    return ("systemctl", f"--root={root}", verb, *units)


def svok(service_dir: str) -> Argv:
    return ("svok", service_dir)
