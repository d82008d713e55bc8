"""A board nobody configured: what the client guesses, creates, records and takes back.

A new room board needs two commands, `sudo apt install pistop-mdns` and
`sudo pistop-mdns install-service client`, and no file edited by hand: it has
Debian's /etc/mpd.conf (no proxy block, music_directory /var/lib/mpd/music),
no autofs map and no pistop-mdns.toml. This module fills in what the
configuration leaves open, from what the board has:

- `look` reads the board once: the mount helpers installed, the
  /etc/auto.master.d entries, mpd.conf, which of the files it would create
  exist already, and the record of what it created before.
- `guess` (pure) sets each value nobody set, with a source that says
  "guessed: " and why (`config show --role client` prints it). A setting in
  the file, the envdir or a flag always wins, and a board its owner set up
  (an autofs map named in /etc/auto.master.d, a proxy block in mpd.conf)
  keeps exactly what derive.py finds there: nothing is guessed for it.
- `needs` (pure) lists what the guessed configuration needs that is not
  there yet, as record entries; `set_up` records them, then creates them;
  `undo` takes back exactly what the record lists.

The guesses:

- mount_mode: autofs when an /etc/auto.master.d/*.autofs file names a map
  (the owner's own), else autofs when autofs and nfs-common are installed,
  else direct when nfs-common is (mount.nfs), else mpd (its own NFS plugin).
- autofs without a map of the owner's: pistop's files in pistop's places,
  /etc/auto.master.d/mpd.autofs naming /etc/autofs.mounts, the share at
  /var/lib/mpd/MDrive, but as a direct map (`/- /etc/autofs.mounts`, keyed
  by the mount point). pistop's indirect map on /var/lib/mpd would cover
  all of /var/lib/mpd, where Debian's mpd.conf keeps its state_file,
  sticker_file and playlist_directory: mpd would not even start (it cannot
  open its sticker database there).
- mpd.conf without a proxy block: add_proxy_block and set_music_directory
  (the bring-up adds the block, comments out db_file, which mpd refuses
  beside it, and points music_directory into the share), and the mount
  point /var/lib/mpd/MDrive.

When: the files are created when the client starts, not when the server
appears. Until a server appears they are inert (a map without an entry, an
empty directory); a problem with them (a file in the way) stops the client
at once with exit status 2, where install-service's check and `systemctl
status` show it; and the bring-up then runs only its usual steps. mpd.conf
alone changes at the bring-up, through the usual mpd.conf step, because its
proxy block needs the server's address: until then mpd keeps the owner's file.

The record (RECORD) is plain text so that the package's postrm, a POSIX
shell script that runs when the Python code is already gone, can undo it
too. One entry per line, its fields separated by one tab, `#` lines are
comments:

    directory<TAB>PATH            created: removed again when empty
    created<TAB>PATH              a file that was not there: removed
    changed<TAB>PATH<TAB>COPY     a file that was there: COPY (its bytes,
                                  owner and mode then) is put back

A copy is made before its entry is written and an entry before what it
describes is created or changed, so a crash at any point leaves nothing the
record does not know; undoing an entry for something never made does nothing.
"""

from __future__ import annotations

import glob
import logging
import os
import posixpath
import shutil
from dataclasses import dataclass
from typing import Callable

from pistop_mdns import derive, files
from pistop_mdns.config import SOURCE_DEFAULT, Config, ConfigError

log = logging.getLogger(__name__)

STATE_DIR = "/var/lib/pistop-mdns"
RECORD = f"{STATE_DIR}/created.list"
ORIGINALS = f"{STATE_DIR}/original"  # copies of the changed files, under their own paths
AUTO_MASTER_D = "/etc/auto.master.d"
MASTER_FILE = f"{AUTO_MASTER_D}/mpd.autofs"
MAP_FILE = "/etc/autofs.mounts"
MOUNTPOINT = "/var/lib/mpd/MDrive"
AUTOFS_TIMEOUT = 60  # pistop's
GUESSED = "guessed: "
# Mount helpers live in sbin, which a user's PATH may lack.
SEARCH_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
PROGRAMS = ("automount", "mount.nfs4", "mount.nfs", "mpd")
REMOVE_HINT = "`pistop-mdns install-service client --remove` takes it back"

CREATED, DIRECTORY, CHANGED = "created", "directory", "changed"

MASTER_TEXT = f"""\
# autofs master map entry, written by pistop-mdns on a board nobody had
# configured: the music server's share comes from the direct map below, whose
# entry the client points at the server it finds. {REMOVE_HINT}.
/- {MAP_FILE} --timeout={AUTOFS_TIMEOUT}
"""

MAP_TEXT = f"""\
# autofs direct map, written by pistop-mdns on a board nobody had configured
# (named by {MASTER_FILE}). The client writes the share's entry (mount
# point, options, server address:export) and points it at the server it finds
# at every bring-up. {REMOVE_HINT}.
"""

CREATED_TEXT = {MASTER_FILE: MASTER_TEXT, MAP_FILE: MAP_TEXT}

RECORD_HEADER = f"""\
# pistop-mdns: what the client created or changed on this board, whose owner had
# configured nothing. `pistop-mdns install-service client --remove` and `apt purge
# pistop-mdns` take it back: each changed file gets its copy back, each created
# file goes, then each directory that is empty. One entry per line, fields
# separated by a tab: directory PATH | created PATH | changed PATH COPY.
"""


# ---------------------------------------------------------------- the record


@dataclass(frozen=True)
class Entry:
    kind: str  # CREATED, DIRECTORY or CHANGED
    path: str
    copy: str = ""  # CHANGED: where the file as it was is kept

    def line(self) -> str:
        return "\t".join([self.kind, self.path, self.copy] if self.kind == CHANGED else [self.kind, self.path])


def record_text(entries: tuple[Entry, ...] | list[Entry]) -> str:
    return RECORD_HEADER + "".join(e.line() + "\n" for e in entries)


def parse_record(text: str, path: str = RECORD) -> tuple[Entry, ...]:
    """The entries of a record; a line that is not one is skipped with a warning."""
    entries = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        kind = fields[0]
        ok = (kind in (CREATED, DIRECTORY) and len(fields) == 2) or (kind == CHANGED and len(fields) == 3)
        if not ok or not all(f.startswith("/") for f in fields[1:]):
            log.warning("%s line %d: not an entry (%r); it is left out", path, number, line)
            continue
        entries.append(Entry(kind, *fields[1:]))
    return tuple(entries)


def _copy_path(path: str) -> str:
    return ORIGINALS + path


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


# ---------------------------------------------------------------- the board


@dataclass(frozen=True)
class Board:
    """What `look` found; everything `guess` and `needs` decide from."""

    programs: tuple[tuple[str, str], ...] = ()  # (name, path) of the PROGRAMS installed
    masters: tuple[tuple[str, str, str], ...] = ()  # (file, mount point, map) of the auto.master.d entries
    mpd_conf: str | None = None  # its text; None when it cannot be read
    mpd_conf_problem: str = ""  # why it cannot be read
    present: frozenset[str] = frozenset()  # of the paths looked at, those that exist
    record: tuple[Entry, ...] = ()

    def program(self, name: str) -> str | None:
        return dict(self.programs).get(name)

    def recorded(self, kind: str | None = None) -> set[str]:
        return {e.path for e in self.record if kind is None or e.kind == kind}

    def owner_masters(self) -> list[tuple[str, str, str]]:
        """auto.master.d entries in files the owner wrote (not ones this module created)."""
        ours = self.recorded(CREATED)
        return [m for m in self.masters if m[0] not in ours]


def _ancestors(path: str) -> list[str]:
    """"/var/lib/mpd/MDrive" -> ["/var", "/var/lib", "/var/lib/mpd", "/var/lib/mpd/MDrive"]."""
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _installed(name: str, root: str) -> str | None:
    for directory in SEARCH_PATH:
        found = posixpath.join(directory, name)
        full = _under(root, found)
        if os.path.isfile(full) and os.access(full, os.X_OK):
            return found
    return None


def look(cfg: Config, root: str = "/") -> Board:
    """Read what this board has (under `root`, another system's disk, when given)."""
    c = cfg.client
    programs = tuple((name, found) for name in PROGRAMS if (found := _installed(name, root)))
    masters = []
    for full in sorted(glob.glob(_under(root, f"{AUTO_MASTER_D}/*.autofs"))):
        path = posixpath.join(AUTO_MASTER_D, os.path.basename(full))
        try:
            entries = files.autofs_master_entries(files.read_text(full), path=path)
        except files.FileFormatError as e:
            raise ConfigError(f"{e}; it names the autofs maps this board may already use") from None
        masters += [(path, mount_point, mapfile) for mount_point, mapfile in entries]
    try:
        mpd_text, problem = files.read_text(_under(root, c.mpd_conf), setting="client.mpd_conf"), ""
    except files.FileFormatError as e:
        mpd_text, problem = None, str(e)
    paths = [MASTER_FILE, MAP_FILE, MAP_FILE + ".bak", c.mpd_conf + ".bak", MOUNTPOINT]
    if c.mountpoint and c.mountpoint.startswith("/"):
        paths.append(c.mountpoint)
    candidates = {ancestor for path in paths for ancestor in _ancestors(path)}
    present = frozenset(p for p in candidates if os.path.lexists(_under(root, p)))
    record: tuple[Entry, ...] = ()
    if os.path.exists(_under(root, RECORD)):
        try:
            record = parse_record(files.read_text(_under(root, RECORD)))
        except files.FileFormatError as e:
            raise ConfigError(f"{e}; it lists what pistop-mdns created on this board") from None
    return Board(programs, tuple(masters), mpd_text, problem, present, record)


# ---------------------------------------------------------------- guessing (pure)


def _set(cfg: Config, name: str) -> bool:
    """Did the file, the envdir or a flag set this [client] key?"""
    return cfg.sources[("client", name)] != SOURCE_DEFAULT


def _guessed(cfg: Config, name: str) -> bool:
    return cfg.sources[("client", name)].startswith(GUESSED)


def _mount_mode(cfg: Config, board: Board) -> tuple[str, str] | None:
    """(mode, source) when mount_mode is not set, else None."""
    if _set(cfg, "mount_mode"):
        return None
    for name in ("autofs_map", "autofs_master"):
        if _set(cfg, name):
            return "autofs", f"derived: [client] {name} is set"
    owner = board.owner_masters()
    if owner:
        path, _, mapfile = owner[0]
        return "autofs", f"derived from {path}, which names the map {mapfile}"
    automount = board.program("automount")
    nfs = board.program("mount.nfs4") or board.program("mount.nfs")
    if automount and nfs:
        return "autofs", f"{GUESSED}autofs and nfs-common are installed ({automount}, {nfs})"
    if nfs:
        return "direct", f"{GUESSED}nfs-common is installed ({nfs}), autofs is not"
    missing = "autofs is installed but nfs-common is not" if automount else "neither autofs nor nfs-common is installed"
    return "mpd", f"{GUESSED}{missing} (no mount.nfs): mpd reads the share with its own NFS plugin"


def mpd_conf_state(cfg: Config, board: Board) -> tuple[str, str]:
    """(state, why) of the client's mpd.conf, one of:

    "ours": pistop-mdns changed it (the record says so); "fresh": it has no
    database block at all; "configured": it has a proxy block; "other": it
    has a database block of another plugin; "unknown": it cannot be read or
    parsed, so nothing is guessed from it.
    """
    path = cfg.client.mpd_conf
    if board.mpd_conf is None:
        return "unknown", board.mpd_conf_problem or f"{path} cannot be read"
    if path in board.recorded(CHANGED):
        return "ours", f"pistop-mdns added the proxy block to {path} ({RECORD})"
    try:
        databases = files.mpd_databases(board.mpd_conf, path=path)
    except files.FileFormatError as e:
        return "unknown", str(e)
    if any(plugin == "proxy" for _, plugin in databases):
        return "configured", f"{path} has a proxy database block"
    if databases:
        line, plugin = databases[0]
        return "other", f"{path} line {line} has a database block with the plugin {plugin!r}"
    return "fresh", f"{path} has no database block"


def guess(cfg: Config, board: Board) -> Config:
    """`cfg` with the [client] values nobody set filled in for this board (see the module's text)."""
    found = _mount_mode(cfg, board)
    if found is not None:
        cfg = cfg.replace("client", "mount_mode", *found)
    mode = cfg.client.mount_mode
    state, why = mpd_conf_state(cfg, board)
    if state == "other" and not _set(cfg, "add_proxy_block"):
        raise ConfigError(
            f"{why} and none with the proxy plugin: this board would play its own database, not the "
            f"server's; fix: remove that block there (the client then adds a proxy block), or set "
            f"add_proxy_block = false in [client] and add the proxy block yourself")
    if state in ("fresh", "ours"):
        for name in ("add_proxy_block", "set_music_directory"):
            if not _set(cfg, name):
                cfg = cfg.replace("client", name, True, GUESSED + why)
    owner_autofs = mode == "autofs" and (board.owner_masters() or _set(cfg, "autofs_master")
                                         or _set(cfg, "autofs_map"))
    unread = board.mpd_conf is None  # no mpd.conf to take the mount point from
    if mode != "mpd" and not owner_autofs and not _set(cfg, "mountpoint") and (state in ("fresh", "ours") or unread):
        cfg = cfg.replace("client", "mountpoint", MOUNTPOINT,
                          f"{GUESSED}pistop's place for the share ({why})")
    if mode == "autofs" and not owner_autofs:
        cfg = _autofs_layout(cfg, board)
    return cfg


def _autofs_layout(cfg: Config, board: Board) -> Config:
    """pistop's autofs files, as a direct map keyed by the mount point."""
    ours = board.recorded(CREATED)
    for path, what in ((MASTER_FILE, "names no autofs map"), (MAP_FILE, f"is named by no {AUTO_MASTER_D}/*.autofs")):
        if path in board.present and path not in ours:
            raise ConfigError(
                f"{path} exists and {what}, so pistop-mdns does not write over it; fix: name the map in "
                f"{MASTER_FILE} ('/- {MAP_FILE} --timeout={AUTOFS_TIMEOUT}') and give it the share's entry, "
                f"set autofs_master and autofs_map in [client], or move {path} away")
    if cfg.client.mountpoint is None:
        music = None
        if board.mpd_conf is not None:
            try:
                music = files.mpd_conf_value(board.mpd_conf, "music_directory")
            except files.FileFormatError:
                music = None
        if music and music.startswith("/") and music.rstrip("/"):
            cfg = cfg.replace("client", "mountpoint", posixpath.dirname(music.rstrip("/")),
                              f"derived from {cfg.client.mpd_conf} (parent of music_directory)")
        else:
            cfg = cfg.replace("client", "mountpoint", MOUNTPOINT, f"{GUESSED}pistop's place for the share")
    mountpoint = cfg.client.mountpoint
    if not mountpoint.startswith("/") or any(ch.isspace() for ch in mountpoint) or mountpoint.rstrip("/") == "":
        raise ConfigError(
            f"{cfg.sources[('client', 'mountpoint')]}: [client] mountpoint: {mountpoint!r} cannot be the key of "
            f"an autofs direct map; fix: set an absolute path without spaces, e.g. "
            f'mountpoint = "{MOUNTPOINT}"')
    if _set(cfg, "autofs_key") and cfg.client.autofs_key != mountpoint:
        raise ConfigError(
            f"{cfg.sources[('client', 'autofs_key')]}: [client] autofs_key: {cfg.client.autofs_key!r}: the "
            f"direct map pistop-mdns writes is keyed by the mount point, {mountpoint}; fix: remove autofs_key, "
            f"or write your own map and name it in {AUTO_MASTER_D}/")
    layout = f"{GUESSED}pistop's autofs files, created at start ({RECORD})"
    cfg = cfg.replace("client", "autofs_master", MASTER_FILE, layout)
    cfg = cfg.replace("client", "autofs_map", MAP_FILE, layout)
    return cfg.replace("client", "autofs_key", mountpoint, f"{GUESSED}the mount point (the key of a direct map)")


def client(cfg: Config, root: str = "/") -> Config:
    """The client's configuration on this board: guessed, then derived (derive.client)."""
    return derive.client(guess(cfg, look(cfg, root)))


# ---------------------------------------------------------------- what to create (pure)


def _file(path: str, board: Board) -> Entry:
    return Entry(CHANGED, path, _copy_path(path)) if path in board.present else Entry(CREATED, path)


def _directories(path: str, board: Board) -> list[Entry]:
    return [Entry(DIRECTORY, p) for p in _ancestors(path) if p not in board.present]


def _wanted(cfg: Config, board: Board) -> list[Entry]:
    """Everything the guessed configuration needs on this board, recorded or not."""
    c = cfg.client
    wanted: list[Entry] = []
    ours_autofs = c.mount_mode == "autofs" and _guessed(cfg, "autofs_master")
    if ours_autofs:
        wanted += _directories(AUTO_MASTER_D, board)
        wanted += [_file(MASTER_FILE, board), _file(MAP_FILE, board), _file(MAP_FILE + ".bak", board)]
    if c.mount_mode != "mpd" and c.mountpoint and (ours_autofs or _guessed(cfg, "mountpoint")):
        wanted += _directories(c.mountpoint, board)
    if _guessed(cfg, "add_proxy_block") or _guessed(cfg, "set_music_directory"):
        wanted += [Entry(CHANGED, c.mpd_conf, _copy_path(c.mpd_conf)), _file(c.mpd_conf + ".bak", board)]
    return wanted


def needs(cfg: Config, board: Board) -> tuple[Entry, ...]:
    """What the guessed configuration needs on this board and the record does not list yet, in order.

    A configuration nothing was guessed for needs nothing.
    """
    known = board.recorded()
    out: list[Entry] = []
    for entry in _wanted(cfg, board):
        if entry.path not in known and entry not in out:
            out.append(entry)
    for entry in out:
        if any(ch in entry.path for ch in "\t\n\r"):
            raise ConfigError(f"{entry.path!r}: a path with a tab or line break cannot be recorded; "
                              f"fix: choose another path")
    return tuple(out)


def summary(cfg: Config, entries: tuple[Entry, ...], *, done: bool = True) -> str:
    """What `entries` amount to, in one sentence (`done` False: what they would do)."""
    made = [e.path for e in entries if e.kind == DIRECTORY or (e.kind == CREATED and e.path in CREATED_TEXT)]
    parts = []
    if made:
        parts.append(("created " if done else "creates ") + ", ".join(made))
    conf = cfg.client.mpd_conf
    if any(e.kind == CHANGED and e.path == conf for e in entries):
        what = "a proxy block" if cfg.client.add_proxy_block else "its proxy block"
        music = " and music_directory in the share" if cfg.client.set_music_directory else ""
        parts.append(f"{conf} gets {what}{music} when a server appears (the file as it was is kept "
                     f"as {_copy_path(conf)})")
    return "; ".join(parts) if parts else "nothing to create"


# ---------------------------------------------------------------- doing


def set_up(cfg: Config, board: Board, root: str = "/", *, dry_run: bool = False) -> tuple[Entry, ...]:
    """Record, then create, what `needs` lists, and create again what the record lists and is gone.

    Returns those entries; nothing is done on a dry run.
    """
    new = needs(cfg, board)
    wanted = {e.path for e in _wanted(cfg, board)}
    gone = tuple(e for e in board.record if e.path in wanted and not os.path.lexists(_under(root, e.path))
                 and (e.kind == DIRECTORY or e.path in CREATED_TEXT))
    if dry_run or not (new or gone):
        return new + gone
    for entry in new:
        if entry.kind == CHANGED and os.path.lexists(_under(root, entry.path)) \
                and not os.path.lexists(_under(root, entry.copy)):
            os.makedirs(os.path.dirname(_under(root, entry.copy)), 0o700, exist_ok=True)
            files.atomic_copy(_under(root, entry.path), _under(root, entry.copy))
    if new:
        os.makedirs(_under(root, STATE_DIR), 0o755, exist_ok=True)
        files.atomic_write(_under(root, RECORD), record_text(board.record + new), backup_suffix=None)
    for entry in sorted(new + gone, key=lambda e: _ancestors(e.path)):
        full = _under(root, entry.path)
        if entry.kind == DIRECTORY and not os.path.isdir(full):
            os.mkdir(full, 0o755)
        elif entry.kind == CREATED and entry.path in CREATED_TEXT and not os.path.lexists(full):
            files.atomic_write(full, CREATED_TEXT[entry.path], backup_suffix=None)
    return new + gone


def prepare(cfg: Config, *, dry_run: bool, root: str = "/") -> int:
    """At the client's start: say how the share is mounted and why, and set this board up.

    Returns 0, or 1 when something could not be written (not root?).
    """
    host = cfg.general.hostname
    source = cfg.sources[("client", "mount_mode")]
    if source.startswith(("derived", GUESSED)):
        log.info("%s: mount_mode %s (%s)", host, cfg.client.mount_mode, source)
    board = look(cfg, root)
    state, why = mpd_conf_state(cfg, board)
    if board.mpd_conf is None:
        log.warning("%s: %s: mpd, which plays the music, is not set up here; fix: sudo apt install mpd, "
                    "or set mpd_conf in [client]", host, why)
    elif state == "unknown":
        log.warning("%s: cannot tell whether %s was set up for pistop-mdns: %s; nothing is guessed from it",
                    host, cfg.client.mpd_conf, why)
    try:
        new = set_up(cfg, board, root, dry_run=dry_run)
    except OSError as e:
        log.error("%s: cannot set up this board: %s: %s; fix: run the client as root", host,
                  e.filename or "", e.strerror)
        return 1
    if new and dry_run:
        log.info("%s: would set up for %s (dry run): %s; it would be recorded in %s", host, cfg.client.mount_mode,
                 summary(cfg, new, done=False), RECORD)
    elif new:
        log.info("%s: set up for %s: %s; recorded in %s, and %s", host, cfg.client.mount_mode, summary(cfg, new),
                 RECORD, REMOVE_HINT)
    return 0


@dataclass
class Undone:
    restored: list[str]
    removed: list[str]
    left: list[str]  # what could not be taken back, with why


def undo(root: str = "/", *, dry_run: bool = False, echo: Callable[[str], None] = print,
         restart_mpd: Callable[[], None] | None = None, reload_autofs: Callable[[], None] | None = None,
         unmount: Callable[[str], None] | None = None) -> Undone | None:
    """Take back what the record lists; None when there is no record.

    Changed files first (their copies put back), then created files; then
    `restart_mpd` when a file was restored (mpd runs on the owner's mpd.conf
    again) and `reload_autofs` when an autofs file went (autofs lets go of
    the mount point); then the directories, deepest first, each unmounted
    (`unmount`) when something is still mounted there and removed when
    empty; last the copies and the record itself.
    """
    record_path = _under(root, RECORD)
    if not os.path.exists(record_path):
        return None
    entries = parse_record(files.read_text(record_path))
    done = Undone([], [], [])
    for e in (e for e in entries if e.kind == CHANGED):
        copy, target = _under(root, e.copy), _under(root, e.path)
        if not os.path.exists(copy):
            if os.path.lexists(target):
                done.left.append(f"{e.path} (its copy {e.copy} is missing)")
            continue
        if dry_run:
            echo(f"would restore {target} from {copy}")
            done.restored.append(e.path)
        elif files.atomic_copy(copy, target):
            done.restored.append(e.path)
    for e in (e for e in entries if e.kind == CREATED):
        target = _under(root, e.path)
        if os.path.lexists(target):
            if dry_run:
                echo(f"would remove {target}")
            else:
                os.unlink(target)
            done.removed.append(e.path)
    if done.restored and restart_mpd is not None:
        restart_mpd()
    if any(p.startswith(AUTO_MASTER_D + "/") for p in done.removed) and reload_autofs is not None:
        reload_autofs()
    for path in sorted((e.path for e in entries if e.kind == DIRECTORY), reverse=True):
        target = _under(root, path)
        if not os.path.isdir(target):
            continue
        if dry_run:
            echo(f"would remove the directory {target} (when empty)")
            continue
        if unmount is not None:
            unmount(target)
        try:
            os.rmdir(target)
            done.removed.append(path)
        except OSError as e:
            done.left.append(f"{path} ({e.strerror})")
    if dry_run:
        echo(f"would remove {record_path} and {_under(root, ORIGINALS)}")
        return done
    shutil.rmtree(_under(root, ORIGINALS), ignore_errors=True)
    os.unlink(record_path)
    try:
        os.rmdir(_under(root, STATE_DIR))
    except OSError:
        pass  # other state lives there too
    return done

