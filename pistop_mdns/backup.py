"""Back up this host's configuration onto the music disk, as pistop's `backup` did.

Every absolute path in [backup] paths (pistop's BACKUP) is copied with rsync
to DEST/backup/HOSTNAME/<the same path>: a directory's content into the
directory of the same name, a file (or a symlink, copied as a link) into the
directory of the same name as its parent. Options are [backup] rsync_options
(pistop's RSYNC_OPTIONS, default `-alptgomHE --delete`).

Nothing is ever written or deleted outside DEST/backup/HOSTNAME/:

- DEST/backup must already exist (it is on the music disk; if it is missing
  the disk is not mounted and the backup would fill the card underneath);
  it is never created;
- relative paths, `..`, and paths that overlap DEST are refused;
- every destination is checked, symlinks resolved, to lie inside
  DEST/backup/HOSTNAME before anything is created or rsync runs;
- rsync's --delete acts only inside each path's own destination directory
  (a directory is synced as `SRC/ -> DST/SRC/`; a file source deletes nothing).

`plan` is pure (the file system is seen through a `probe`); `run_backup`
does the work and is what the client calls after a bring-up and the server
at start.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shlex
import stat
from dataclasses import dataclass
from typing import Callable

from pistop_mdns import commands
from pistop_mdns.config import Config
from pistop_mdns.executor import Runner

log = logging.getLogger(__name__)

# A first backup of a large directory onto a slow USB disk takes a while;
# rsync is killed only when one path takes longer than this.
PATH_TIMEOUT = 3600.0

DIRECTORY, FILE, MISSING = "directory", "file", "missing"


class BackupRefused(Exception):
    """The backup cannot start at all; the message says why.

    `status` is 2 for a configuration mistake, 1 for a disk that is not there
    or a destination that is not safe to write to.
    """

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PathInfo:
    kind: str  # DIRECTORY, FILE (anything else rsync copies as one entry, symlinks too) or MISSING
    real: str  # the path with every symlink resolved


def probe(path: str) -> PathInfo:
    """What `path` is on this host (a symlink counts as a file: rsync -l copies the link)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return PathInfo(MISSING, os.path.realpath(path))
    except OSError:
        return PathInfo(MISSING, path)
    return PathInfo(DIRECTORY if stat.S_ISDIR(mode) else FILE, os.path.realpath(path))


@dataclass(frozen=True)
class Step:
    path: str  # the configured path, normalised
    source: str  # what rsync reads: "/etc/" for a directory, "/etc/fstab" for a file
    target: str  # where it goes, always ending in "/"
    parent: str  # directory that must exist before rsync runs (rsync makes only the last level)
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Skip:
    path: str
    reason: str


def inside(path: str, root: str) -> bool:
    root = root.rstrip("/")
    return not root or path == root or path.startswith(root + "/")


def host_dir(dest: str, hostname: str) -> str:
    return posixpath.join(dest, "backup", hostname)


def plan(paths: list[str], dest: str, hostname: str, options: list[str], *,
         probe: Callable[[str], PathInfo] = probe, dry_run: bool = False) -> list[Step | Skip]:
    """One Step (or a Skip saying why not) per configured path, in order (pure)."""
    base = host_dir(dest, hostname)
    real_dest = probe(dest).real
    steps: list[Step | Skip] = []
    for raw in paths:
        if not raw.startswith("/"):
            steps.append(Skip(raw, "not an absolute path; fix: write it as /full/path in [backup] paths"))
            continue
        if ".." in raw.split("/"):
            steps.append(Skip(raw, "contains '..'; fix: write the real path in [backup] paths"))
            continue
        path = posixpath.normpath(raw)
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        info = probe(path)
        if info.kind == MISSING:
            steps.append(Skip(path, "no such file or directory"))
            continue
        if inside(info.real, real_dest) or (info.kind == DIRECTORY and inside(real_dest, info.real)):
            steps.append(Skip(path, f"overlaps the backup destination {dest}; fix: remove it from "
                                    f"[backup] paths"))
            continue
        if info.kind == DIRECTORY:
            source = "/" if path == "/" else path + "/"
            target = base + source
            parent = posixpath.dirname(target.rstrip("/"))
        else:
            target = base + posixpath.dirname(path).rstrip("/") + "/"
            source = path
            parent = target.rstrip("/")
        steps.append(Step(path, source, target, parent,
                          commands.rsync(options, source, target, dry_run=dry_run)))
    return steps


def check_destination(dest: str, hostname: str) -> str:
    """The real path of DEST/backup/HOSTNAME's parent; BackupRefused when it is unsafe or absent."""
    if not dest:
        raise BackupRefused("[backup] dest is not set; fix: set dest in [backup] (pistop's DEST), "
                            "e.g. the music disk's mount point", 2)
    if not dest.startswith("/"):
        raise BackupRefused(f"[backup] dest {dest!r} is not an absolute path; fix: write it as /full/path", 2)
    if not hostname or "/" in hostname or hostname in (".", ".."):
        raise BackupRefused(f"host name {hostname!r} cannot name a directory; fix: set [general] hostname", 2)
    backup = posixpath.join(dest, "backup")
    if not os.path.isdir(backup):
        raise BackupRefused(f"{backup} does not exist: the backup disk is not mounted (or has no "
                            f"backup directory); fix: mount it, or create {backup} on it once")
    real_backup = os.path.realpath(backup)
    base = host_dir(dest, hostname)
    if os.path.lexists(base) and os.path.realpath(base) != posixpath.join(real_backup, hostname):
        raise BackupRefused(f"{base} is a symlink out of {backup}; fix: replace it with a directory")
    return real_backup


def _contained(step: Step, real_base: str) -> bool:
    """Is the step's destination, symlinks resolved, inside DEST/backup/HOSTNAME?"""
    return inside(os.path.realpath(step.target), real_base) and inside(os.path.realpath(step.parent), real_base)


def execute(cfg: Config, runner: Runner, *, default_dest: str = "", dry_run: bool = False,
            echo: Callable[[str], None] | None = None) -> bool:
    """Run the backup; True when every path was copied. BackupRefused when it cannot start.

    `echo` receives the plan in dry-run mode (the command line prints it).
    A runner in dry-run mode makes this a dry run too: it creates no directory.
    """
    dry_run = dry_run or getattr(runner, "dry_run", False)
    b = cfg.backup
    dest = b.dest or default_dest
    dest = posixpath.normpath(dest) if dest else ""
    hostname = cfg.general.hostname
    real_backup = check_destination(dest, hostname)
    real_base = posixpath.join(real_backup, hostname)
    base = host_dir(dest, hostname)
    steps = plan(b.paths, dest, hostname, b.rsync_options, dry_run=dry_run)
    if dry_run and echo:
        echo(f"backup of {hostname} to {base}/ (dry run: nothing is written)")
    if not os.path.isdir(base):
        if dry_run:
            log.info("backup: would create %s", base)
        else:
            os.mkdir(base, 0o755)
    all_ok = True
    for step in steps:
        if isinstance(step, Skip):
            log.error("backup %s: not copied: %s", step.path, step.reason)
            all_ok = False
            continue
        if not _contained(step, real_base):
            log.error("backup %s: not copied: %s leads out of %s through a symlink; fix: remove that "
                      "symlink from the backup", step.path, step.target, base)
            all_ok = False
            continue
        if not os.path.isdir(step.parent):
            if dry_run:
                if echo:
                    echo(f"{step.path}: would create {step.parent}/ and copy everything: "
                         f"{shlex.join(step.argv)}")
                log.info("backup %s -> %s: would copy everything (new)", step.path, step.target)
                continue
            os.makedirs(step.parent, 0o755, exist_ok=True)
        if dry_run and echo:
            echo(f"{step.path}: {shlex.join(step.argv)}")
        result = runner.run(step.argv, timeout=PATH_TIMEOUT)
        if dry_run and echo and result.out.strip():
            echo(result.out.rstrip())
        if result.ok:
            log.info("backup %s -> %s: rsync status 0%s", step.path, step.target, " (dry run)" if dry_run else "")
        else:
            status = "timed out" if result.timed_out else "not installed" if result.not_found else result.rc
            log.error("backup %s -> %s: rsync status %s: %s", step.path, step.target, status, result.summary())
            all_ok = False
    return all_ok


def run_backup(cfg: Config, runner: Runner, *, default_dest: str = "", dry_run: bool = False) -> bool:
    """Back up [backup] paths; True when every path succeeded. Logs one line per path.

    `default_dest` is used when [backup] dest is empty (the client passes its
    mount point). Never raises for a missing disk: it logs why and returns False.
    """
    if not cfg.backup.paths:
        log.info("backup: nothing to back up ([backup] paths is empty)")
        return True
    try:
        return execute(cfg, runner, default_dest=default_dest, dry_run=dry_run)
    except BackupRefused as e:
        log.error("backup: refused: %s", e)
        return False
    except OSError as e:
        log.error("backup: %s: %s", e.filename or "", e.strerror)
        return False
