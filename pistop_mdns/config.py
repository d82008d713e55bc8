"""Configuration: defaults, one TOML file, a pistop `variables/` envdir, flags.

Later sources win: defaults < TOML file < envdir < command-line flags. Every
value remembers where it came from, so `pistop-mdns config show` can say why a
setting is what it is. Every mistake is a `ConfigError` that names the file,
the key, what was expected and how to fix it; the command line turns it into
exit status 2.
"""

from __future__ import annotations

import difflib
import os
import re
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "/etc/pistop-mdns/pistop-mdns.toml"

# pistop's update service upgraded these (its UPGRADE variable), with pistop
# itself replaced by its successor. Packages that are not installed are skipped.
PISTOP_UPGRADE = (
    "ucspi-tcp mpdev libqmail libdkim2 libsrs2 indimail-mini daemontools "
    "pistop-mdns mpd upmpdcli upmpdcli-config upmpdcli-radios libnpupnp1 "
    "libupnpp6 raspotify"
).split()


class ConfigError(Exception):
    """A configuration mistake the user can fix; the message says how."""


@dataclass(frozen=True)
class Key:
    section: str
    name: str
    kind: str  # str, int, float, bool, list
    default: Any
    help: str
    envvar: str | None = None  # the pistop variables/ file that sets it
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    single: bool = False  # list kind: one string is taken as a list of one

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _k(section, name, kind, default, help, **kw) -> Key:
    return Key(section, name, kind, default, help, **kw)


# `None` as a default means "derived at start-up" (from /etc/exports, mpd.conf,
# the autofs maps or the host name); `config show` says what it was derived from.
KEYS: tuple[Key, ...] = (
    # ------------------------------------------------------------ general
    _k("general", "hostname", "str", None,
       "This host's name in the LAN: the server's instance name and the client's name "
       "(default: the system host name)."),
    _k("general", "interfaces", "list", [],
       "Network interfaces to advertise and browse on (default: every interface that "
       "is up and not loopback)."),
    _k("general", "ip_version", "str", "ipv4",
       "Address families to use: ipv4, or all (IPv4 and IPv6).", choices=("ipv4", "all")),
    _k("general", "key_file", "str", "/etc/pistop-mdns/key",
       "Pre-shared key written by `pistop-mdns keygen`; used when the file exists. With "
       "a key, clients act only on servers that prove they know it."),
    _k("general", "max_clock_skew", "float", 600.0,
       "With a key: seconds a server's signed record may differ from this host's clock "
       "(keep clocks right with NTP).", minimum=10, maximum=86400),
    _k("general", "state_dir", "str", "/run/pistop-mdns",
       "Where the running server or client keeps its state file (read by `status`)."),
    _k("general", "service_manager", "str", "auto",
       "How services (mpd, autofs) are started and stopped: auto, systemd, "
       "daemontools or none.", choices=("auto", "systemd", "daemontools", "none")),
    _k("general", "service_dir", "str", "/service",
       "daemontools service directory (svc -u DIR/mpd)."),
    _k("general", "timeout", "int", 30,
       "Seconds any external command may run before it is killed.", envvar="TIMEOUT",
       minimum=1, maximum=3600),
    # ------------------------------------------------------------ server
    _k("server", "instance", "str", None,
       "Service instance name advertised in _pistop._tcp (default: the host name)."),
    _k("server", "port", "int", 5555,
       "TCP port of the liveness channel, advertised in the SRV record.",
       minimum=1, maximum=65535),
    _k("server", "export", "str", None,
       "NFS export path clients mount (default: derived from exports_file)."),
    _k("server", "nfsvers", "str", "4", "NFS version clients should mount with.",
       choices=("3", "4", "4.0", "4.1", "4.2")),
    _k("server", "mpd_port", "int", None,
       "Port of the server's mpd that clients proxy to (default: from mpd_conf, or 6600).",
       minimum=1, maximum=65535),
    _k("server", "music", "str", None,
       "Music directory inside the export (default: mpd_conf's music_directory "
       "relative to the export)."),
    _k("server", "exports_file", "str", "/etc/exports", "NFS exports file to derive export from."),
    _k("server", "mpd_conf", "str", "/etc/mpd.conf", "The server's mpd.conf."),
    _k("server", "stop_reason", "str", "auto",
       "What the server tells clients when it stops: auto (ask the service manager "
       "whether the host is shutting down), poweroff, restart or stopping.",
       choices=("auto", "poweroff", "restart", "stopping")),
    _k("server", "heartbeat", "float", 2.0,
       "Seconds between heartbeats on the liveness channel.", minimum=0.2, maximum=60),
    _k("server", "advertise_rsync", "bool", False,
       "Also advertise the rsync daemon as _rsync._tcp."),
    _k("server", "rsync_port", "int", 873, "Port of the rsync daemon.", minimum=1, maximum=65535),
    _k("server", "backup_at_start", "bool", True,
       "Run `pistop-mdns backup` when the server starts and [backup] paths are set, as "
       "pistop's fserver did; false turns it off."),
    # ------------------------------------------------------------ client
    _k("client", "server", "list", [],
       "Follow only these servers, by instance name, most preferred first: a more "
       "preferred one is taken as soon as it is there (default: any, the first one seen).",
       single=True),
    _k("client", "static_servers", "list", [],
       "Servers to reach over the liveness channel directly, without mDNS, as HOST or "
       "HOST:PORT (port 5555 by default), for networks that filter multicast (pistop's "
       "HOST and PORT).", envvar="HOST", single=True),
    _k("client", "prefer_ipv6", "bool", False,
       "Of a server's addresses on this host's subnets, use an IPv6 one before IPv4 "
       "(needs ip_version all in [general])."),
    _k("client", "mount_mode", "str", "autofs",
       "How the share is mounted: autofs (pistop's way), direct (mount -t nfs4), or "
       "mpd (mpd reads nfs:// itself; no kernel mount). When not set, the client picks "
       "it at start: autofs when an /etc/auto.master.d/*.autofs file names a map or "
       "autofs is installed, else direct when nfs-common is, else mpd.",
       choices=("autofs", "direct", "mpd")),
    _k("client", "mountpoint", "str", None,
       "Where the share is mounted (pistop's MDRIVE; default: from the autofs maps, "
       "else the parent of mpd.conf's music_directory, and /var/lib/mpd/MDrive when "
       "mpd.conf has no proxy block).", envvar="MDRIVE"),
    _k("client", "mount_fstype", "str", "nfs4", "File system type for direct mounts."),
    _k("client", "mount_options", "str", "soft,timeo=5,retry=1", "Options for direct mounts."),
    _k("client", "mount_source", "str", "{address}:{export}",
       "What is mounted; {address}, {export} and {host} are filled in from the record."),
    _k("client", "autofs_master", "str", None,
       "auto.master file naming the map (default: the /etc/auto.master.d/*.autofs file "
       "that has an entry; when none has, the client creates pistop's "
       "/etc/auto.master.d/mpd.autofs and /etc/autofs.mounts)."),
    _k("client", "autofs_map", "str", None, "autofs map file (default: from autofs_master)."),
    _k("client", "autofs_key", "str", None,
       "Key of the share's entry in the map (default: its only entry, else MDrive)."),
    _k("client", "autofs_options", "str", "fstype=nfs,vers=4,soft,timeo=5,retry=1",
       "Options written into the autofs map entry."),
    _k("client", "autofs_location", "str", "{address}:{export}",
       "Location written into the autofs map entry; {address}, {export} and {host} are "
       "filled in from the record."),
    _k("client", "ready_marker", "str", "",
       "Path inside the share that must exist before mpd starts (pistop used "
       "data/stats.db; default: the server's music directory, and a non-empty share)."),
    _k("client", "ready_timeout", "float", 30.0,
       "Seconds to wait for the share to become ready before giving up.",
       minimum=0.1, maximum=3600),
    _k("client", "mpd_conf", "str", "/etc/mpd.conf", "The client's mpd.conf to rewrite."),
    _k("client", "add_proxy_block", "bool", False,
       "Add a proxy database block to mpd.conf when it has none (commenting out its "
       "db_file, which mpd does not allow beside it). When not set: true when mpd.conf "
       "has no database block at all, as on a board nobody configured."),
    _k("client", "set_music_directory", "bool", False,
       "Point mpd.conf's music_directory at the music in the share (the mount point and "
       "the server's music directory) at every bring-up; in mpd mode it is always the "
       "share's nfs:// URL. When not set: true when mpd.conf has no proxy block."),
    _k("client", "mpd_service", "str", "mpd",
       "mpd's service (systemd: mpd.service and mpd.socket; daemontools: service_dir/NAME)."),
    _k("client", "autofs_service", "str", "autofs", "autofs's service name."),
    _k("client", "power_off", "bool", False,
       "Power this board off when the server powers off.", envvar="POWER_OFF"),
    _k("client", "force_umount", "bool", False,
       "When powering off, unmount lazily (umount -fl) so a hung server cannot hold "
       "the power-off.", envvar="FORCE_UMOUNT"),
    _k("client", "poweroff_on_crash", "bool", False,
       "Also power off when the server vanishes without saying why."),
    _k("client", "poweroff_command", "list", ["shutdown", "-h", "now"],
       "Command that powers this board off."),
    _k("client", "umount_retries", "int", 10,
       "How often to retry a failing unmount (one second apart).", minimum=1, maximum=600),
    _k("client", "hooks_dirs", "list", ["/etc/pistop-mdns/hooks", "~/.pistop"],
       "Directories searched for pre_mount, post_mount, pre_unmount, post_unmount."),
    _k("client", "hook_timeout", "int", 60, "Seconds a hook may run.", minimum=1, maximum=3600),
    _k("client", "gone_hold", "float", 3.0,
       "Seconds a server may vanish without notice before the client tears down "
       "(debounces flapping records).", minimum=0, maximum=600),
    _k("client", "restart_grace", "float", 120.0,
       "Seconds to keep the share while a restarting server comes back.",
       minimum=0, maximum=86400),
    _k("client", "dead_time", "float", 10.0,
       "Seconds without a heartbeat after which a connected server counts as dead.",
       minimum=1, maximum=3600),
    _k("client", "heartbeat", "float", 2.0,
       "Seconds between heartbeats the client sends.", minimum=0.2, maximum=60),
    _k("client", "flap_window", "float", 60.0,
       "A server torn down less than this many seconds ago must stay present for "
       "flap_settle seconds before it is brought up again.", minimum=0, maximum=86400),
    _k("client", "flap_settle", "float", 5.0, "See flap_window.", minimum=0, maximum=3600),
    _k("client", "startup_wait", "float", 3.0,
       "Seconds to look for servers at start before a mounted share without a "
       "server is torn down.", minimum=0, maximum=600),
    _k("client", "teardown_on_exit", "bool", False,
       "Tear the share down when the client itself is stopped."),
    _k("client", "backup_after_bringup", "bool", True,
       "Run the backup after each bring-up when [backup] paths are set (as pistop did)."),
    # ------------------------------------------------------------ notify
    _k("notify", "lcd_fifo", "str", "", "FIFO of an LCD daemon.", envvar="LCD_FIFO"),
    _k("notify", "lcd_host", "str", "", "Host of an LCD daemon listening on UDP.",
       envvar="LCD_HOST"),
    _k("notify", "lcd_port", "int", 1806, "UDP port of the LCD daemon.", envvar="LCD_PORT",
       minimum=1, maximum=65535),
    _k("notify", "notify_fifo", "str", "", "FIFO of a desktop notification daemon.",
       envvar="NOTIFY_FIFO"),
    _k("notify", "notify_host", "str", "", "Host of a desktop notifier listening on UDP.",
       envvar="NOTIFY_HOST"),
    _k("notify", "notify_port", "int", 1807, "UDP port of the desktop notifier.",
       envvar="NOTIFY_PORT", minimum=1, maximum=65535),
    # ------------------------------------------------------------ backup
    _k("backup", "paths", "list", [], "Absolute files or directories to back up.",
       envvar="BACKUP"),
    _k("backup", "dest", "str", "",
       "Backups go to DEST/backup/HOSTNAME/ (default on a client: the mount point).",
       envvar="DEST"),
    _k("backup", "rsync_options", "list", ["-alptgomHE", "--delete"], "rsync options.",
       envvar="RSYNC_OPTIONS"),
    # ------------------------------------------------------------ update
    _k("update", "packages", "list", list(PISTOP_UPGRADE),
       "Packages to keep upgraded (pistop's UPGRADE list).", envvar="UPGRADE"),
    _k("update", "interval", "int", 21600,
       "Seconds between update checks (the systemd timer's interval).", envvar="INTERVAL",
       minimum=600, maximum=30 * 86400),
    _k("update", "use_at", "str", "auto",
       "Run the upgrade through `at now + 1 minute`: auto (when at exists), yes, no.",
       choices=("auto", "yes", "no")),
    # ------------------------------------------------------------ shutdown
    _k("shutdown", "services", "list", ["mpdev", "mpd", "smbd", "nmbd", "nfs-server"],
       "systemd services the shutdown helper stops after the clients are down (one that is "
       "not installed is skipped); every daemontools service and svscan are stopped too."),
    _k("shutdown", "data_disk", "str", "",
       "Mount point of the data disk to unmount before power-off (pistop's MDRIVE on the "
       "server; default: the mount that holds the export, unless that is /).", envvar="MDRIVE"),
    _k("shutdown", "clients_timeout", "float", 60.0,
       "Seconds to wait, at most, for connected clients to report they are down and for "
       "those that power off to be off (connection closed, address silent).",
       minimum=0, maximum=600),
    _k("shutdown", "uhubctl_location", "str", "",
       "uhubctl hub location (-l) whose USB power is cut at a power-off, only after the "
       "data disk was unmounted and every step before succeeded."),
    _k("shutdown", "uhubctl_port", "str", "", "uhubctl port list (-p); empty: all ports."),
    _k("shutdown", "command", "list", ["shutdown", "-h", "now"],
       "The power-off command; extra arguments of `pistop-mdns shutdown` replace -h now."),
)

SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(k.section for k in KEYS))
BY_NAME: dict[tuple[str, str], Key] = {(k.section, k.name): k for k in KEYS}
# pistop's variables/ files, each with the keys it sets (MDRIVE: the board's mount
# point and the server's data disk).
BY_ENVVAR: dict[str, tuple[Key, ...]] = {
    var: tuple(k for k in KEYS if k.envvar == var) for var in dict.fromkeys(k.envvar for k in KEYS if k.envvar)
}

SOURCE_DEFAULT = "default"


class Section:
    """Attribute access to one section's values: cfg.client.mount_mode."""

    def __init__(self, name: str, values: dict[str, Any]):
        self._name = name
        self.__dict__.update(values)

    def __repr__(self) -> str:
        items = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        return f"Section({self._name!r}, {items!r})"


class Config:
    """The effective configuration and, for every key, where its value came from."""

    def __init__(self, values: dict[tuple[str, str], Any], sources: dict[tuple[str, str], str]):
        self.values = dict(values)
        self.sources = dict(sources)
        for section in SECTIONS:
            setattr(
                self,
                section,
                Section(section, {n: v for (s, n), v in self.values.items() if s == section}),
            )

    def replace(self, section: str, name: str, value: Any, source: str) -> Config:
        """A copy with one value set (used for values derived at start-up)."""
        values = dict(self.values)
        sources = dict(self.sources)
        values[(section, name)] = value
        sources[(section, name)] = source
        return Config(values, sources)


# ---------------------------------------------------------------- converting


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "array", dict: "table"}.get(type(value), type(value).__name__)


def _example(key: Key) -> str:
    return {
        "bool": f"{key.name} = true",
        "int": f"{key.name} = {key.default if key.default is not None else 1}",
        "float": f"{key.name} = {key.default if key.default is not None else 1.0}",
        "list": f'{key.name} = ["a", "b"]',
    }.get(key.kind, f'{key.name} = "{key.choices[0] if key.choices else "..."}"')


def _expected(key: Key) -> str:
    if key.choices:
        return "one of " + ", ".join(key.choices)
    return {"bool": "true or false", "int": "an integer", "float": "a number",
            "list": "a list of strings", "str": "a string"}[key.kind]


def _bad(where: str, key: Key, got: str) -> ConfigError:
    return ConfigError(
        f"{where}: [{key.section}] {key.name}: expected {_expected(key)}, got {got}; "
        f"fix: write {_example(key)}"
    )


def _check_range(where: str, key: Key, value: float) -> None:
    low, high = key.minimum, key.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(
            f"{where}: [{key.section}] {key.name}: {value} is out of range "
            f"{low:g}..{high:g}; fix: choose a value in that range"
        )


DEFAULT_CHANNEL_PORT = 5555


def endpoint(text: str) -> tuple[str, int]:
    """HOST, HOST:PORT, IPV6 or [IPV6]:PORT -> (host, port); ValueError when it is none of them."""
    host, port = text, str(DEFAULT_CHANNEL_PORT)
    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", text)
    if bracketed:
        host, port = bracketed.group(1), bracketed.group(2) or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535 or host.startswith("-") \
            or not re.fullmatch(r"[A-Za-z0-9._:-]{1,253}", host):
        raise ValueError(text)
    return host, int(port)


def _check_endpoint(where: str, key: Key, value: str) -> None:
    try:
        endpoint(value)
    except ValueError:
        raise ConfigError(
            f"{where}: [{key.section}] {key.name}: {value!r} is not HOST or HOST:PORT; "
            f'fix: write e.g. {key.name} = ["MusicPI", "192.168.1.10:5555"]'
        ) from None


def convert(key: Key, value: Any, where: str) -> Any:
    """Check a TOML value against the key's type; raise ConfigError naming `where`."""
    got = f"{value!r} ({_type_name(value)})"
    if key.kind == "bool":
        if not isinstance(value, bool):
            raise _bad(where, key, got)
        return value
    if key.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(where, key, got)
        _check_range(where, key, value)
        return value
    if key.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(where, key, got)
        _check_range(where, key, float(value))
        return float(value)
    if key.kind == "list":
        if key.single and isinstance(value, str):
            value = [value] if value else []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad(where, key, got)
        if key.name == "static_servers":
            for v in value:
                _check_endpoint(where, key, v)
        return list(value)
    if not isinstance(value, str):
        raise _bad(where, key, got)
    if key.choices and value not in key.choices:
        raise _bad(where, key, got)
    return value


_TRUE = {"1", "yes", "true", "on", "y"}
_FALSE = {"0", "no", "false", "off", "n", ""}


def convert_text(key: Key, text: str, where: str) -> Any:
    """Convert a value given as text (envdir file, command-line flag)."""
    text = text.strip()
    if key.kind == "bool":
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise _bad(where, key, repr(text))
    if key.kind == "int":
        try:
            value = int(text)
        except ValueError:
            raise _bad(where, key, repr(text)) from None
        _check_range(where, key, value)
        return value
    if key.kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise _bad(where, key, repr(text)) from None
        _check_range(where, key, value)
        return value
    if key.kind == "list":
        items = text.replace(",", " ").split()
        if key.name == "static_servers":
            for v in items:
                _check_endpoint(where, key, v)
        return items
    if key.choices and text not in key.choices:
        raise _bad(where, key, repr(text))
    return text


# ---------------------------------------------------------------- sources


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f"did you mean {close[0]}? " if close else ""


def read_toml(path: str) -> dict[tuple[str, str], Any]:
    """Read and validate one TOML file; values are converted to their key's type."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file; fix: create it (see `pistop-mdns config example`) "
            f"or drop --config"
        ) from None
    except OSError as e:
        raise ConfigError(
            f"{path}: cannot read it: {e.strerror}; fix: check its permissions"
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}; fix: correct the syntax there") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; fix: save it as UTF-8") from None
    values: dict[tuple[str, str], Any] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{path}: [{section}]: unknown section; {_suggest(section, list(SECTIONS))}"
                f"fix: use one of {', '.join(SECTIONS)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path}: {section}: expected a [{section}] table, got {_type_name(table)}; "
                f"fix: write [{section}] on its own line above its keys"
            )
        names = [k.name for k in KEYS if k.section == section]
        for name, value in table.items():
            key = BY_NAME.get((section, name))
            if key is None:
                raise ConfigError(
                    f"{path}: [{section}] {name}: unknown key; {_suggest(name, names)}"
                    f"fix: rename or remove it (`pistop-mdns config example` lists every key)"
                )
            values[(section, name)] = convert(key, value, path)
    return values


def envdir_path(directory: str) -> Path:
    """pistop keeps its variables in SERVICE/variables; accept either folder."""
    d = Path(directory)
    return d / "variables" if (d / "variables").is_dir() else d


def read_envdir(directory: str) -> dict[tuple[str, str], tuple[Any, str]]:
    """Read pistop's envdir variables (one file per variable, daemontools envdir rules).

    As with envdir(8), the first line is the value with trailing white space
    removed, and an empty file unsets the variable. Files this tool has no
    use for (HOST, PORT, MAXDAEMONS...) are ignored.
    """
    d = envdir_path(directory)
    if not d.is_dir():
        raise ConfigError(
            f"{directory}: not a directory; fix: give --envdir the service directory "
            f"(e.g. /service/fclient) or its variables/ folder"
        )
    values: dict[tuple[str, str], tuple[Any, str]] = {}
    for var, keys in BY_ENVVAR.items():
        path = d / var
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise ConfigError(f"{path}: cannot read it: {e.strerror}; fix: check its permissions") from None
        first = raw.split(b"\n", 1)[0].replace(b"\0", b"\n").rstrip()
        if not first:
            continue
        try:
            text = first.decode()
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text; fix: rewrite the file") from None
        for key in keys:
            values[(key.section, key.name)] = (convert_text(key, text, str(path)), str(path))
    return _with_pistop_port(d, values)


def _with_pistop_port(d: Path, values: dict[tuple[str, str], tuple[Any, str]]) -> dict:
    """fclient's HOST came with a PORT: they make one static server."""
    name = ("client", "static_servers")
    port = d / "PORT"
    if name not in values or not port.is_file():
        return values
    try:
        number = port.read_text().split("\n", 1)[0].strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{port}: cannot read it: {e}; fix: rewrite the file") from None
    if not number:
        return values
    hosts, where = values[name]
    with_port = [f"{h}:{number}" if ":" not in h else h for h in hosts]
    key = BY_NAME[name]
    for v in with_port:
        _check_endpoint(str(port), key, v)
    return {**values, name: (with_port, f"{where} and {port}")}


def load(
    path: str | None = None,
    envdir: str | None = None,
    flags: dict[tuple[str, str], Any] | None = None,
) -> Config:
    """Build the effective configuration. `path` None means the default file, if any.

    `flags` hold values given on the command line, already typed by click or
    as text (converted here).
    """
    values = {(k.section, k.name): k.default for k in KEYS}
    sources = {(k.section, k.name): SOURCE_DEFAULT for k in KEYS}
    if path is None and os.path.exists(DEFAULT_CONFIG):
        path = DEFAULT_CONFIG
    if path is not None:
        for name, value in read_toml(path).items():
            values[name] = value
            sources[name] = path
    if envdir is not None:
        for name, (value, where) in read_envdir(envdir).items():
            values[name] = value
            sources[name] = where
    for name, value in (flags or {}).items():
        key = BY_NAME[name]
        if isinstance(value, str):
            value = convert_text(key, value, f"option {key.flag}")
        values[name] = value
        sources[name] = f"option {key.flag}"
    return Config(values, sources)


# ---------------------------------------------------------------- showing


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def show(cfg: Config, sections: tuple[str, ...] = SECTIONS) -> str:
    """The effective configuration as TOML, each value followed by its source."""
    lines: list[str] = []
    for section in sections:
        lines.append(f"[{section}]")
        for key in (k for k in KEYS if k.section == section):
            value = cfg.values[(section, key.name)]
            source = cfg.sources[(section, key.name)]
            if value is None:
                lines.append(f"# {key.name} = (derived at start-up)  # {source}")
            else:
                lines.append(f"{key.name} = {toml_value(value)}  # {source}")
        lines.append("")
    return "\n".join(lines)


def example() -> str:
    """The shipped example file: every key, commented out, with its default and help."""
    out = [
        "# pistop-mdns configuration. Every key is optional: the values shown are the",
        "# defaults. Uncomment and change what you need; `pistop-mdns config check`",
        "# validates this file and `pistop-mdns config show` prints the result.",
        "",
    ]
    for section in SECTIONS:
        out.append(f"[{section}]")
        for key in (k for k in KEYS if k.section == section):
            note = key.help + (f" pistop variable: {key.envvar}." if key.envvar else "")
            out.extend(textwrap.wrap(note, 78, initial_indent="# ", subsequent_indent="# "))
            if key.default is None:
                out.append(f"#{key.name} = ...")
            else:
                out.append(f"#{key.name} = {toml_value(key.default)}")
        out.append("")
    return "\n".join(out)
