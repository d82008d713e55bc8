"""The real music chain on the simulated LAN (lan.py), for the demo and the component tests.

- `make_songs`: short tagged songs made with sox.
- mpd: a music server's mpd (simple database) and a room board's mpd.conf
  (proxy database), run with `--no-daemon` so their PIDs are theirs; `mpc`
  to talk to them; `play` (`start_playing`, then `wait_elapsed`) to see a
  song's elapsed time move on: it is read and decoded.
- `Ganesha`: nfs-ganesha (userspace NFS, no kernel NFS needed) with rpcbind,
  exporting a directory under a pseudo path (TESTBED.md section 8).
- `Supervised`: a daemontools service directory run by a real `supervise`.

Every process is started through `host.spawn` (the Lan stops it) and wrapped
in `timeout` where it might outlive a crashed run; every wait is bounded and
raises `LanError` with what the process said.
"""

from __future__ import annotations

import contextlib
import glob
import re
import shutil
import subprocess
import time
from pathlib import Path

from pistop_mdns.lan import Host, LanError, Output, wait_for

# What the chain runs, and the Debian 12 package that brings it.
PROGRAMS = {
    "mpd": "mpd",
    "mpc": "mpc",
    "sox": "sox",
    "supervise": "daemontools",
    "svc": "daemontools",
    "svstat": "daemontools",
    "ganesha.nfsd": "nfs-ganesha",
    "rpcbind": "rpcbind",
    "nfs-ls": "libnfs-utils",
}
# ganesha's VFS backend comes in a package of its own, as a plugin, not a program.
GANESHA_VFS = ("/usr/lib/*/ganesha/libfsalvfs.so", "nfs-ganesha-vfs")


def missing_packages(which=shutil.which, find=glob.glob) -> list[str]:
    """The Debian packages the chain needs that are not installed (by what they bring)."""
    missing = [package for program, package in PROGRAMS.items() if which(program) is None]
    if not find(GANESHA_VFS[0]):
        missing.append(GANESHA_VFS[1])
    return list(dict.fromkeys(missing))


SONGS = (
    ("ArtistA/one.flac", "Tone One", "Artist A", 440),
    ("ArtistA/two.ogg", "Tone Two", "Artist A", 550),
    ("ArtistB/three.flac", "Tone Three", "Artist B", 660),
)
SONG_SECONDS = 20  # long enough to see it play on a busy machine
LIFETIME = "600"  # seconds any helper process may live, whatever happens to its caller


def make_songs(music: Path, seconds: int = SONG_SECONDS) -> list[str]:
    """Tagged songs under `music`; returns their paths relative to it, as mpd lists them."""
    for relative, title, artist, frequency in SONGS:
        path = music / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["timeout", "60", "sox", "-n", "--comment", f"TITLE={title}", "--add-comment",
                        f"ARTIST={artist}", str(path), "synth", str(seconds), "sine", str(frequency)],
                       check=True, capture_output=True)
    return sorted(relative for relative, *_ in SONGS)


# ---------------------------------------------------------------- mpd


def server_mpd_conf(directory: Path, music: Path, address: str, port: int = 6600) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "playlists").mkdir(exist_ok=True)
    conf = directory / "mpd.conf"
    conf.write_text(
        f'music_directory "{music}"\n'
        f'playlist_directory "{directory}/playlists"\n'
        f'db_file "{directory}/database"\n'
        f'log_file "{directory}/log"\n'
        f'pid_file "{directory}/pid"\n'
        f'state_file "{directory}/state"\n'
        f'bind_to_address "{address}"\n'
        f'port "{port}"\n'
        'zeroconf_enabled "no"\n'
        'audio_output {\n    type "null"\n    name "null"\n}\n'
    )
    return conf


CLIENT_PORT = 6601


def client_mpd_conf_text(directory: Path, music_directory: str, proxy_host: str, proxy_port: int = 6600,
                         room: str = "kitchen") -> str:
    """A room board's mpd.conf as a person wrote it: comments, tabs, odd spacing."""
    return (
        f"# {room} board: music comes from the server\n"
        f'music_directory\t\t"{music_directory}"\n'
        f'playlist_directory "{directory}/playlists"   # local playlists\n'
        f'log_file "{directory}/log"\n'
        f'pid_file "{directory}/pid"\n'
        f'state_file "{directory}/state"\n'
        'bind_to_address "127.0.0.1"\n'
        f'port "{CLIENT_PORT}"\n'
        'zeroconf_enabled "no"\n'
        "\n"
        "database {\n"
        '\tplugin "proxy"\n'
        f'\thost   "{proxy_host}"   # set by pistop-mdns\n'
        f'\tport "{proxy_port}"\n'
        "}\n"
        "audio_output {\n"
        '    type "null"\n'
        '    name "null"   # no sound card on this machine\n'
        "}\n"
    )


def mpd_run_script(conf: Path) -> str:
    return f"#!/bin/sh\nexec 2>&1\nexec mpd --no-daemon --stderr {conf}\n"


def mpc(host: Host, *args: str, port: int = CLIENT_PORT, address: str = "127.0.0.1",
        timeout: float = 20) -> subprocess.CompletedProcess:
    return host.run(["timeout", str(timeout), "mpc", "-h", address, "-p", str(port), *args], timeout=timeout + 5)


def fill_database(host: Host, songs: list[str], port: int = 6600) -> None:
    """Wait for the server's mpd to answer, have it scan its music, wait until it lists `songs`."""
    wait_for(lambda: mpc(host, "status", port=port, address=host.address).returncode == 0, 30,
             what=f"{host.name}'s mpd to answer")
    mpc(host, "update", "--wait", port=port, address=host.address, timeout=60)
    wait_for(lambda: mpc(host, "listall", port=port, address=host.address).stdout.split() == songs, 30,
             what=f"{host.name}'s mpd to list the songs")


def start_server_mpd(host: Host, directory: Path, music: Path, songs: list[str], port: int = 6600) -> Output:
    """The music server's mpd, with its database built over `music`."""
    conf = server_mpd_conf(directory, music, host.address, port)
    out = Output(host.spawn(["timeout", LIFETIME, "mpd", "--no-daemon", "--stderr", str(conf)]), f"{host.name} mpd")
    fill_database(host, songs, port)
    return out


_PLAYING = re.compile(r"\[playing\] #\d+/\d+\s+(\d+):(\d+)/")


def elapsed(host: Host, port: int = CLIENT_PORT) -> int | None:
    """Seconds played of the current song, None when mpd is not playing."""
    match = _PLAYING.search(mpc(host, "status", port=port).stdout)
    return int(match.group(1)) * 60 + int(match.group(2)) if match else None


def start_playing(host: Host, song: str, port: int = CLIENT_PORT) -> None:
    """Queue just `song` and play it."""
    for args in (("clear",), ("add", song), ("play",)):
        r = mpc(host, *args, port=port)
        if r.returncode != 0:
            raise LanError(f"{host.name}: mpc {' '.join(args)}: {(r.stderr or r.stdout).strip()}")


def wait_elapsed(host: Host, seconds: int, port: int = CLIENT_PORT) -> None:
    """Wait until mpd has played `seconds` of the current song: it is read and decoded."""
    wait_for(lambda: (elapsed(host, port) or 0) >= seconds, 30,
                    what=f"the song's elapsed time in {host.name} to reach {seconds} s")


def play(host: Host, song: str, port: int = CLIENT_PORT) -> None:
    """Queue `song`, play it, and wait until its elapsed time has moved on."""
    start_playing(host, song, port)
    wait_elapsed(host, 2, port)


# ---------------------------------------------------------------- NFS (nfs-ganesha)


class Ganesha:
    """nfs-ganesha and rpcbind in `host` (its private mount namespace and /run)."""

    def __init__(self, host: Host, directory: Path, export: Path, pseudo: str = "/export"):
        self.host = host
        self.pseudo = pseudo
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "ganesha.conf"
        # NFSv3 is what Debian 12's mpd speaks, whatever the URL says: it needs
        # rpcbind and the MOUNT protocol, hence Protocols = 3, 4.
        conf.write_text(
            f"NFS_CORE_PARAM {{ Protocols = 3, 4; Bind_addr = {host.address}; NFS_Port = 2049;\n"
            "    MNT_Port = 20048; Mount_Path_Pseudo = true; Enable_RQUOTA = false; Enable_NLM = false; }\n"
            f"NFSV4 {{ Graceless = true; RecoveryRoot = {directory}/recovery; }}\n"
            f"EXPORT {{ Export_Id = 1; Path = {export}; Pseudo = {pseudo}; Access_Type = RO;\n"
            "    Squash = No_Root_Squash; Protocols = 3, 4; Transports = TCP; FSAL { Name = VFS; } }\n"
            "LOG { Default_Log_Level = EVENT; }\n"
        )
        start = directory / "start.sh"
        start.write_text(
            "mkdir -p /run/rpcbind\n"
            "rpcbind -f -w &\n"
            "sleep 0.5\n"
            f"exec ganesha.nfsd -F -L /dev/stderr -f {conf} -p {directory}/ganesha.pid -N NIV_EVENT\n"
        )
        self.out = Output(host.spawn(["timeout", LIFETIME, "sh", str(start)]), f"{host.name} ganesha")

    @property
    def url(self) -> str:
        return f"nfs://{self.host.address}{self.pseudo}"

    def wait_served(self, client: Host, expect: str) -> None:
        """Wait until `client` lists `expect` in the export over NFS (libnfs, NFSv3)."""
        def listed() -> bool:
            r = client.run(["timeout", "10", "nfs-ls", self.url], timeout=15)
            return r.returncode == 0 and expect in r.stdout.split()

        try:
            wait_for(listed, 60, interval=0.3, what=f"{self.url} to be served")
        except LanError as e:
            raise LanError(f"{e}; nfs-ganesha said:\n{self.out.text()}") from None


# ---------------------------------------------------------------- daemontools


def svstat(directory: Path) -> str:
    return subprocess.run(["timeout", "10", "svstat", str(directory)], capture_output=True, text=True,
                          timeout=15).stdout.strip()


class Supervised:
    """A daemontools service directory; `running()` keeps a real supervise on it."""

    def __init__(self, host: Host, directory: Path, run_script: str, *, down: bool = False):
        self.host = host
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        run = directory / "run"
        run.write_text(run_script)
        run.chmod(0o755)
        if down:
            (directory / "down").write_text("")
        self.out: Output | None = None

    def status(self) -> str:
        return svstat(self.directory)

    def pid(self) -> int | None:
        match = re.search(r": up \(pid (\d+)\)", self.status())
        return int(match.group(1)) if match else None

    def up(self) -> bool:
        return self.pid() is not None

    def down(self) -> bool:
        return ": down " in self.status()

    @contextlib.contextmanager
    def running(self):
        self.out = Output(self.host.spawn(["timeout", LIFETIME, "supervise", str(self.directory)]),
                          f"{self.host.name} supervise {self.directory.name}")
        try:
            wait_for(lambda: ": up " in self.status() or ": down " in self.status(), 20,
                     what=f"supervise to run {self.directory}")
            yield self
        finally:
            subprocess.run(["timeout", "10", "svc", "-dx", str(self.directory)], capture_output=True, timeout=15)
            deadline = time.monotonic() + 15
            while "supervise not running" not in self.status() and time.monotonic() < deadline:
                time.sleep(0.1)
