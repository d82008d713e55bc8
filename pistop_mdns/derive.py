"""Zero-config: values the user did not set, derived from the host's own files.

- general.hostname: the system host name.
- server.export / music / mpd_port: from /etc/exports and the server's
  mpd.conf (the export that holds mpd's music_directory; with an NFSv4
  fsid=0 root, the path relative to it, as clients mount it).
- client.mountpoint and the autofs map: as pistop's pistopstart found MDRIVE
  (the /etc/auto.master.d/*.autofs entry and its map, or the parent of
  mpd.conf's music_directory).

Each derived value keeps its provenance ("derived from /etc/exports"), shown
by `pistop-mdns config show`. What cannot be derived is a ConfigError that
says which key to set.
"""

from __future__ import annotations

import glob
import os
import posixpath
import socket

from pistop_mdns import files
from pistop_mdns.config import Config, ConfigError

AUTO_MASTER_D = "/etc/auto.master.d"
DEFAULT_MPD_PORT = 6600
DEFAULT_AUTOFS_KEY = "MDrive"
DIRECT_MAP = "/-"  # auto.master's mount point for a direct map


def _read(path: str) -> str | None:
    try:
        return files.read_text(path)
    except files.FileFormatError:
        return None


def general(cfg: Config) -> Config:
    if cfg.general.hostname is None:
        # mDNS wants the short name: "musicpi", not "musicpi.example.org".
        cfg = cfg.replace("general", "hostname", socket.gethostname().split(".")[0],
                          "derived from the system host name")
    return cfg


def _within(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/")


def server(cfg: Config) -> Config:
    cfg = general(cfg)
    s = cfg.server
    if s.instance is None:
        cfg = cfg.replace("server", "instance", cfg.general.hostname, "derived from general.hostname")
    mpd_text = _read(s.mpd_conf)
    music_dir = None
    if mpd_text is not None:
        try:
            music_dir = files.mpd_conf_value(mpd_text, "music_directory")
        except files.FileFormatError:
            music_dir = None
    if s.mpd_port is None:
        port_text = None
        if mpd_text is not None:
            try:
                port_text = files.mpd_conf_value(mpd_text, "port")
            except files.FileFormatError as e:
                raise ConfigError(f"{e}; or set mpd_port in [server]") from None
        if port_text is not None and port_text.isdigit():
            cfg = cfg.replace("server", "mpd_port", int(port_text), f"derived from {s.mpd_conf}")
        else:
            source = f"mpd's default ({s.mpd_conf} sets no port)" if mpd_text is not None else \
                f"mpd's default ({s.mpd_conf} not readable)"
            cfg = cfg.replace("server", "mpd_port", DEFAULT_MPD_PORT, source)
    export = s.export
    if export is None:
        text = _read(s.exports_file)
        paths = files.exports_paths(text) if text is not None else []
        if not paths:
            raise ConfigError(
                f"[server] export: not set, and {s.exports_file} exports nothing"
                f"{'' if text is not None else ' (cannot read it)'}; "
                f'fix: set export = "/srv/music" in [server], or export the music disk in {s.exports_file}'
            )
        local = [p for p in paths if music_dir and _within(music_dir, p)]
        local_export = max(local, key=len) if local else paths[0]
        root = files.exports_fsid0(text) if cfg.server.nfsvers.startswith("4") else None
        export = local_export
        if root and _within(local_export, root):
            export = "/" + posixpath.relpath(local_export, root).lstrip(".")
            export = "/" if export == "/" else export.rstrip("/")
        cfg = cfg.replace("server", "export", export, f"derived from {s.exports_file}")
        if cfg.server.music is None:
            music = posixpath.relpath(music_dir, local_export) if music_dir and _within(music_dir, local_export) else ""
            cfg = cfg.replace("server", "music", "" if music == "." else music,
                              f"derived from {s.mpd_conf} and {s.exports_file}")
    if cfg.server.music is None:
        cfg = cfg.replace("server", "music", "", "default (the export is the music directory)")
    return cfg


def _check_template(cfg: Config, name: str) -> None:
    template = getattr(cfg.client, name)
    try:
        template.format(address="198.18.0.11", export="/srv/music", host="musicpi")
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(
            f"{cfg.sources[('client', name)]}: [client] {name}: {template!r} is not a valid template "
            f"({type(e).__name__}: {e}); fix: use only {{address}}, {{export}} and {{host}}"
        ) from None


def client(cfg: Config) -> Config:
    cfg = general(cfg)
    c = cfg.client
    for name in ("mount_source", "autofs_location"):
        _check_template(cfg, name)
    if c.mount_mode == "autofs":
        cfg = _autofs(cfg)
    if cfg.client.mountpoint is None:
        if c.mount_mode == "mpd":
            cfg = cfg.replace("client", "mountpoint", "", "not used in mpd mode")
        else:
            text = _read(c.mpd_conf)
            music_dir = None
            if text is not None:
                try:
                    music_dir = files.mpd_conf_value(text, "music_directory")
                except files.FileFormatError:
                    music_dir = None
            if not music_dir or not music_dir.startswith("/"):
                raise ConfigError(
                    f"[client] mountpoint: not set and cannot be derived ({c.mpd_conf} has no absolute "
                    f'music_directory); fix: set mountpoint = "/var/lib/mpd/MDrive" in [client] '
                    f"or MDRIVE in the envdir"
                )
            cfg = cfg.replace("client", "mountpoint", posixpath.dirname(music_dir.rstrip("/")),
                              f"derived from {c.mpd_conf} (parent of music_directory)")
    return cfg


def _autofs(cfg: Config) -> Config:
    c = cfg.client
    master, mapfile, key = c.autofs_master, c.autofs_map, c.autofs_key
    mount_root = None
    if mapfile is None:
        candidates = [master] if master else sorted(glob.glob(os.path.join(AUTO_MASTER_D, "*.autofs")))
        for path in candidates:
            text = _read(path)
            entries = files.autofs_master_entries(text) if text is not None else []
            if entries:
                mount_root, mapfile = entries[0]
                master = path
                break
        if mapfile is None:
            raise ConfigError(
                f"[client] autofs_map: not set, and no {AUTO_MASTER_D}/*.autofs file names a map; "
                f"fix: create {AUTO_MASTER_D}/mpd.autofs with a line like "
                f"'/var/lib/mpd /etc/autofs.mounts --timeout=60', or set mount_mode = \"direct\""
            )
        cfg = cfg.replace("client", "autofs_master", master, "derived: first *.autofs with an entry")
        cfg = cfg.replace("client", "autofs_map", mapfile, f"derived from {master}")
    if key is None:
        text = _read(mapfile) or ""
        keys = [line.split()[0] for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
        key = keys[0] if len(keys) == 1 else DEFAULT_AUTOFS_KEY
        cfg = cfg.replace("client", "autofs_key", key,
                          f"derived from {mapfile}" if len(keys) == 1 else "default (pistop's MDrive)")
    if cfg.client.mountpoint is None:
        if mount_root is None and cfg.client.autofs_master:
            text = _read(cfg.client.autofs_master)
            for root, mf in files.autofs_master_entries(text or ""):
                if mf == mapfile:
                    mount_root = root
        if mount_root is not None:
            # "/-" marks a direct map: its keys are the mount points themselves.
            where = key if mount_root == DIRECT_MAP else posixpath.join(mount_root, key)
            cfg = cfg.replace("client", "mountpoint", where,
                              f"derived from {cfg.client.autofs_master} and {mapfile}")
    return cfg
