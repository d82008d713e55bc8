"""`pistop-mdns demo`: the whole chain on a simulated LAN on this machine.

Builds three hosts in network namespaces (lan.py): a music server and two
room boards. The full demo runs the real chain in them (lan_music.py):
nfs-ganesha exporting generated songs, the server's mpd, each board's mpd
under daemontools with a pistop-style mpd.conf, and the real
`pistop-mdns server`, `client --mount-mode mpd` and `shutdown`. It tells
the story with evidence, timed: the server starts and the boards play; the
server's cable is pulled and they stop; it comes back and they play again;
the server shuts the house down. Then it shows that nothing is left behind.

`--dry-run` (or missing music packages, which it says) gives the quick
version: the boards only plan their steps (`client --dry-run`), so nothing
but the namespaces and pistop-mdns itself is needed. `--keep` leaves the LAN
up for poking around until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, TextIO

from pistop_mdns import auth
from pistop_mdns import lan as lanmod
from pistop_mdns import lan_music as music

SERVER = "musicpi"
CLIENTS = ("kitchen", "bedroom")
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)

EXPORT = "/srv/music"
MUSIC = "Music"
MPD_PORT = 6600
# Short on purpose, so that the demo runs in well under a minute; the
# defaults are 10 s and 2 s.
DEAD_TIME = 5
HEARTBEAT = 1
SONG_SECONDS = 60  # longer than the whole story, so the songs never run out
SONG_FOR = {"kitchen": "ArtistA/one.flac", "bedroom": "ArtistB/three.flac"}
# The board's mpd.conf as pistop left it: the server by a name nothing resolves.
PISTOP_PROXY_HOST = "MusicPI"
PISTOP_MUSIC_DIRECTORY = "/var/lib/mpd/MDrive/Music"
WAIT = 60  # seconds any one step of the story may take on a busy machine
POWEROFF_STAND_IN = """#!/bin/sh
# The demo's stand-in for `shutdown -h now`: it only leaves a note.
echo "would power off now" > {note}
"""


class Narrator:
    """Prints lines from every host with the time since the demo began."""

    def __init__(self, out: TextIO):
        self.out = out
        self.start = time.monotonic()
        self.lock = threading.Lock()

    def say(self, text: str, who: str = "demo") -> None:
        with self.lock:
            self.out.write(f"[{time.monotonic() - self.start:6.2f}s] {who:<8} {text}\n")
            self.out.flush()

    def follow(self, proc: subprocess.Popen, who: str) -> lanmod.Output:
        """Print what `proc` says, as `who`, and collect it for waiting on."""
        def show(line: str) -> None:
            if line:
                self.say(line.removeprefix(f"{who}: "), who)

        return lanmod.Output(proc, who, on_line=show)


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pistop_mdns", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("JOURNAL_STREAM", None)
    return env


def run(*, keep: bool, dry_run: bool = False, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if os.geteuid() != 0:
        out.write("pistop-mdns demo needs root: it builds network namespaces. Run: sudo pistop-mdns demo\n")
        return 2
    if not dry_run:
        missing = music.missing_packages()
        if missing:
            out.write(f"the full demo needs {', '.join(missing)} (sudo apt install {' '.join(missing)}, "
                      f"or run tools/demo): showing the quick version, whose boards only plan (--dry-run)\n")
            dry_run = True
    # SIGTERM ends the demo as Ctrl-C does: through the clean-up.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _quick(keep, out) if dry_run else _full(keep, out)
    except lanmod.LanError as e:
        out.write(f"pistop-mdns demo: {e}\n")
        return 1
    except KeyboardInterrupt:
        out.write("\ninterrupted; everything the demo made has been removed\n")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _wait_for_ctrl_c() -> None:
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(1):
            pass
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------- the quick version (--dry-run)


def _quick(keep: bool, out: TextIO) -> int:
    narrator = Narrator(out)
    say = narrator.say
    env = _env()
    hosts = [SERVER, *CLIENTS]
    with lanmod.Lan(hosts) as lan:
        say(f"built a LAN of {len(hosts)} hosts on a private bridge (namespaces {lan.prefix}-*), "
            f"no traffic leaves this machine")
        for h in lan.hosts.values():
            role = "music server" if h.name == SERVER else "room board (client, --dry-run)"
            say(f"{h.address:<13} {role}", h.name)
        lan.wait_for_multicast()
        clients = {}
        for name in CLIENTS:
            proc = lan[name].spawn(_argv("client", "--dry-run", "--mount-mode", "direct",
                                         "--mountpoint", "/var/lib/mpd/MDrive"), env=env)
            clients[name] = narrator.follow(proc, name)
        time.sleep(1.0)
        say(f"starting `pistop-mdns server` on musicpi (export {EXPORT}, music in {MUSIC}, mpd on {MPD_PORT})")
        began = time.monotonic()
        server = lan[SERVER].spawn(_argv("server", "--export", EXPORT, "--music", MUSIC,
                                         "--mpd-port", str(MPD_PORT)), env=env)
        narrator.follow(server, SERVER)
        for name in CLIENTS:
            stamp, _ = clients[name].wait(f"up with {SERVER}", 30)
            say(f"{name} planned and ran its bring-up {stamp - began:.2f} s after the server started")
        say("what `pistop-mdns browse` shows from kitchen:")
        browse = lan["kitchen"].run(_argv("browse", "--timeout", "2"), env=env, timeout=30)
        for line in browse.stdout.splitlines():
            say("  " + line, "kitchen")
        if keep:
            say("--keep: the LAN stays up until you press Ctrl-C. A shell in a host:")
            for h in lan.hosts.values():
                out.write(f"    sudo nsenter -t {h.pid} -n -u -m     # {h.name} ({h.address})\n")
            out.write("  and in there, this checkout's pistop-mdns:\n")
            out.write(f"    {_here()} browse   # or status\n")
            out.flush()
            _wait_for_ctrl_c()
        say("stopping the server (SIGTERM, as `systemctl stop` does)")
        stopped = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(15)
        say(f"server exited with status {server.returncode} after {time.monotonic() - stopped:.2f} s")
        for name in CLIENTS:
            stamp, _ = clients[name].wait(r"plan 2 step", 30)
            say(f"{name} started its tear-down {stamp - stopped:.2f} s after the stop")
        time.sleep(1.0)
        say("cleaning up: stopping the clients, deleting the namespaces")
    say("done: nothing is left behind")
    return 0


def _here() -> str:
    """How to run this pistop-mdns by hand."""
    return f"PYTHONPATH={shlex.quote(PACKAGE_ROOT)} {shlex.quote(sys.executable)} -m pistop_mdns"


# ---------------------------------------------------------------- the full version


class House:
    """What the full demo made in the LAN's hosts: files under one temporary directory."""

    def __init__(self, root: Path):
        self.root = root
        self.key = root / "key"
        self.key.write_text(auth.generate_key() + "\n")
        self.key.chmod(0o600)

    def dir(self, host: str) -> Path:
        return self.root / host

    def config(self, host: str) -> Path:
        return self.dir(host) / "pistop-mdns.toml"

    def stand_in(self, host: str) -> Path:
        """A harmless power-off command for `host`; it writes the note `powered_off` looks for."""
        script = self.dir(host) / "poweroff"
        script.write_text(POWEROFF_STAND_IN.format(note=shlex.quote(str(self.powered_off(host)))))
        script.chmod(0o755)
        return script

    def powered_off(self, host: str) -> Path:
        return self.dir(host) / "powered-off"

    def server_config(self, mpd_conf: Path) -> None:
        d = self.dir(SERVER)
        self.config(SERVER).write_text(f"""# musicpi's configuration in the demo; every other key is at its default
[general]
key_file = "{self.key}"
state_dir = "{d}/run"
service_manager = "daemontools"
service_dir = "{d}/service"
[server]
export = "{EXPORT}"
music = "{MUSIC}"
mpd_conf = "{mpd_conf}"
heartbeat = {HEARTBEAT}
[shutdown]
services = ["mpd"]
clients_timeout = {WAIT}
command = ["{self.stand_in(SERVER)}"]
""")

    def board_config(self, name: str) -> None:
        d = self.dir(name)
        self.config(name).write_text(f"""# {name}'s configuration in the demo; every other key is at its default
[general]
key_file = "{self.key}"
state_dir = "{d}/run"
service_manager = "daemontools"
service_dir = "{d}/service"
[client]
mount_mode = "mpd"
mpd_conf = "{d}/mpd.conf"
hooks_dirs = ["{d}/hooks"]
dead_time = {DEAD_TIME}
power_off = true
poweroff_command = ["{self.stand_in(name)}"]
""")


def _full(keep: bool, out: TextIO) -> int:
    narrator = Narrator(out)
    say = narrator.say
    lan = lanmod.Lan([SERVER, *CLIENTS])
    root = Path(tempfile.mkdtemp(prefix="pistop-demo-"))
    namespaces: set[str] = set()
    failure, interrupted = "", False
    try:
        with lan:
            namespaces = _namespace_ids(lan)
            with contextlib.ExitStack() as services:
                _story(lan, House(root), services, narrator, keep)
                say("cleaning up: stopping every process the demo started, deleting the namespaces and files")
    except (lanmod.LanError, subprocess.TimeoutExpired) as e:
        failure = f"pistop-mdns demo: {e}"
    except KeyboardInterrupt:
        failure, interrupted = "\ninterrupted", True
    finally:
        shutil.rmtree(root, ignore_errors=True)
    left = _left_behind(lan.prefix, namespaces, root)
    what = "left behind: " + ("; ".join(left) if left else
                              f"nothing (no {lan.prefix}-* namespace, no process in them, {root} is gone)")
    if failure:
        out.write(f"{failure}\n{what}\n")
        return 0 if interrupted and not left else 1
    say(what)
    say("read more: README.md (\"The client, step by step\" and \"When the server goes\"), man pistop-mdns; "
        "`pistop-mdns demo --keep` to poke around before the shutdown")
    return 1 if left else 0


def _story(lan: lanmod.Lan, house: House, services: contextlib.ExitStack, narrator: Narrator,
           keep: bool) -> None:
    say = narrator.say
    env = _env()
    musicpi = lan[SERVER]
    say(f"built a LAN of {len(lan.hosts)} hosts on a private bridge (namespaces {lan.prefix}-*, files in "
        f"{house.root}), no traffic leaves this machine")
    songs = _music_server(lan, house, services, say)
    _boards(lan, house, services, say)
    clients = {}
    for name in CLIENTS:
        proc = lan[name].spawn(_argv("--config", str(house.config(name)), "client"), env=env)
        clients[name] = narrator.follow(proc, name)
    time.sleep(1.0)  # browsing before the server appears, so that the timings below are the server's

    # act 1: the server starts, the boards come up and play
    say(f"act 1: `pistop-mdns server` starts on {SERVER}")
    began = time.monotonic()
    server = narrator.follow(musicpi.spawn(_argv("--config", str(house.config(SERVER)), "server"), env=env), SERVER)
    for name in CLIENTS:
        stamp, _ = clients[name].wait(f"up with {SERVER}", WAIT)
        say(f"{name} was up {stamp - began:.2f} s after the server started")
    say(f"the boards found {SERVER} over mDNS (_pistop._tcp): no address was typed anywhere")
    for name in CLIENTS:
        _show_diff(house.dir(name), name, say)
    for name in CLIENTS:
        lanmod.wait_for(lambda: music.mpc(lan[name], "listall").stdout.split() == songs, WAIT,
                        what=f"{name}'s mpd to list {SERVER}'s songs")
        say(f"mpc listall: {', '.join(songs)}: {SERVER}'s library, through the proxy database", name)
    _play(lan, say)

    # act 2: the cable
    say(f"act 2: pulling {SERVER}'s cable (its switch port, veth {musicpi.switch_port} in the bridge namespace, "
        f"goes down)")
    marks = {name: clients[name].mark() for name in CLIENTS}
    pulled = time.monotonic()
    musicpi.cable(False)
    for name in CLIENTS:
        stamp, _ = clients[name].wait(r"silent for .* -> ", DEAD_TIME + WAIT, start=marks[name])
        clients[name].wait(r"(told|could not tell) the server this board is down", WAIT, start=marks[name])
        say(f"{name} began its tear-down {stamp - pulled:.2f} s after the cable was pulled: dead_time "
            f"({DEAD_TIME} s) after the last heartbeat it heard; mpd was asked to stop, not waited for, "
            f"since a dead server's share can hold it")
        status = music.mpc(lan[name], "status")
        say(f"mpc status: {_first_line(status.stderr or status.stdout)}", name)

    # act 3: the cable comes back
    say(f"act 3: plugging {SERVER}'s cable back in")
    marks = {name: clients[name].mark() for name in CLIENTS}
    plugged = time.monotonic()
    musicpi.cable(True)
    for name in CLIENTS:
        stamp, _ = clients[name].wait(f"up with {SERVER}", WAIT, start=marks[name])
        say(f"{name} was up again {stamp - plugged:.2f} s after the cable came back")
    _play_again(lan, say)

    if keep:
        _keep(lan, house, narrator.out, say)

    # act 4: the server shuts the house down
    say(f"act 4: `pistop-mdns shutdown` on {SERVER} (pistop's pishutdown): the boards go down first, then the server")
    marks = {name: clients[name].mark() for name in CLIENTS}
    began = time.monotonic()
    shutdown = narrator.follow(musicpi.spawn(_argv("--config", str(house.config(SERVER)), "shutdown"), env=env),
                               SERVER)
    for name in CLIENTS:
        clients[name].wait(r"powering off: ", WAIT, start=marks[name])
        lanmod.wait_for(house.powered_off(name).exists, WAIT, what=f"{name}'s power-off stand-in")
        code = clients[name].proc.wait(WAIT)
        say(f"would power off now ({time.monotonic() - began:.2f} s after the shutdown began; "
            f"poweroff_command is a stand-in here); `pistop-mdns client` exited with status {code}, as it "
            f"does before a real power-off", name)
    say(f"{SERVER} waits until each board is off (its address silent): the demo unplugs them, as their power "
        f"going would")
    for name in CLIENTS:
        lan[name].link(False)
    code = shutdown.proc.wait(WAIT)
    lanmod.wait_for(house.powered_off(SERVER).exists, WAIT, what=f"{SERVER}'s power-off stand-in")
    say(f"would power off now (`pistop-mdns shutdown` exited with status {code}, {time.monotonic() - began:.2f} s "
        f"after it began; [shutdown] command is a stand-in here)", SERVER)
    say(f"the power-off would also stop `pistop-mdns server` on {SERVER}: stopping it (SIGTERM)")
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(WAIT)
    server.wait(r"withdrew", WAIT)


def _music_server(lan: lanmod.Lan, house: House, services: contextlib.ExitStack,
                  say: Callable[..., None]) -> list[str]:
    """musicpi: songs, its mpd under daemontools, NFS; returns the songs as mpd lists them."""
    musicpi = lan[SERVER]
    began = time.monotonic()
    export = house.dir(SERVER) / "srv-music"
    songs = music.make_songs(export / MUSIC, SONG_SECONDS)
    say(f"{musicpi.address:<13} music server: {len(songs)} songs of {SONG_SECONDS} s made with sox "
        f"({time.monotonic() - began:.2f} s)", SERVER)
    began = time.monotonic()
    mpd_conf = music.server_mpd_conf(house.dir(SERVER) / "mpd", export / MUSIC, musicpi.address, MPD_PORT)
    server_mpd = music.Supervised(musicpi, house.dir(SERVER) / "service" / "mpd", music.mpd_run_script(mpd_conf))
    services.enter_context(server_mpd.running())
    music.fill_database(musicpi, songs, MPD_PORT)
    say(f"its mpd, run by daemontools' supervise, lists them on {musicpi.address}:{MPD_PORT} "
        f"({time.monotonic() - began:.2f} s)", SERVER)
    began = time.monotonic()
    nfs = music.Ganesha(musicpi, house.dir(SERVER) / "ganesha", export, pseudo=EXPORT)
    lan.wait_for_multicast()
    nfs.wait_served(lan[CLIENTS[0]], MUSIC)
    say(f"nfs-ganesha (userspace NFS, with rpcbind) serves {nfs.url} over NFSv3 and v4 "
        f"({time.monotonic() - began:.2f} s)", SERVER)
    house.server_config(mpd_conf)
    return songs


def _boards(lan: lanmod.Lan, house: House, services: contextlib.ExitStack, say: Callable[..., None]) -> None:
    """The rooms: mpd.conf as pistop left it, mpd under daemontools and down, a configuration."""
    for name in CLIENTS:
        host, d = lan[name], house.dir(name)
        (d / "playlists").mkdir(parents=True)
        (d / "hooks").mkdir()
        conf = d / "mpd.conf"
        conf.write_text(music.client_mpd_conf_text(d, PISTOP_MUSIC_DIRECTORY, PISTOP_PROXY_HOST, MPD_PORT,
                                                   room=name))
        board_mpd = music.Supervised(host, d / "service" / "mpd", music.mpd_run_script(conf), down=True)
        services.enter_context(board_mpd.running())
        house.board_config(name)
        resolved = host.run(["getent", "hosts", PISTOP_PROXY_HOST], timeout=10)
        where = "which nothing here resolves" if resolved.returncode != 0 else \
            f"which resolves to {resolved.stdout.split()[0]}"
        say(f"{host.address:<13} room board: mpd.conf as pistop left it, proxy host \"{PISTOP_PROXY_HOST}\" "
            f"({where}); its mpd, run by daemontools' supervise, is down", name)
    say(f"the boards run `pistop-mdns client` ({house.config(CLIENTS[0])}): mount_mode = \"mpd\", "
        f"so mpd reads the share over NFS itself, no kernel mount")
    say(f"dead_time = {DEAD_TIME} s instead of 10, and the server heartbeats every {HEARTBEAT} s instead of 2, "
        f"to keep the demo short")
    say("power_off = true with a harmless stand-in as poweroff_command; all three hosts share a key (keygen)")


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "(nothing)")


def _status(host: lanmod.Host) -> str:
    """`mpc status` as one line: "[playing] #1/1   0:02/1:00 (3%)  Artist A - Tone One"."""
    lines = music.mpc(host, "status").stdout.splitlines()
    return f"{lines[1]}  {lines[0]}" if len(lines) > 2 else _first_line("\n".join(lines))


def _play(lan: lanmod.Lan, say: Callable[..., None]) -> None:
    """Each board plays its song: shown when it starts and once its elapsed time has moved on."""
    for name, song in SONG_FOR.items():
        music.start_playing(lan[name], song)
        say(f"mpc play {song}: {_status(lan[name])}", name)
    for name in SONG_FOR:
        music.wait_elapsed(lan[name], 2)
        say(f"mpc status: {_status(lan[name])}: the song is read over NFS and decoded", name)


def _play_again(lan: lanmod.Lan, say: Callable[..., None]) -> None:
    """mpd saved its queue and position when it was stopped, and plays on by itself."""
    resumed = {}
    for name in SONG_FOR:
        lanmod.wait_for(lambda: music.elapsed(lan[name]) is not None, WAIT, what=f"{name}'s mpd to play again")
        resumed[name] = music.elapsed(lan[name]) or 0
        say(f"mpc status: {_status(lan[name])}: mpd resumed by itself (its state_file)", name)
    for name in SONG_FOR:
        music.wait_elapsed(lan[name], resumed[name] + 2)
        say(f"mpc status: {_status(lan[name])}", name)


def _show_diff(directory: Path, name: str, say: Callable[..., None]) -> None:
    before = (directory / "mpd.conf.bak").read_text().splitlines()
    after = (directory / "mpd.conf").read_text().splitlines()
    say(f"{directory / 'mpd.conf'} as pistop-mdns rewrote it (the old one is mpd.conf.bak):", name)
    for line in difflib.unified_diff(before, after, lineterm="", n=0):
        if line.startswith(("-", "+")) and not line.startswith(("---", "+++")):
            say(f"  {line}", name)


def _keep(lan: lanmod.Lan, house: House, out: TextIO, say: Callable[..., None]) -> None:
    kitchen, bedroom, musicpi = lan["kitchen"], lan["bedroom"], lan[SERVER]
    say("--keep: the LAN stays up; press Ctrl-C to go on with the shutdown and the clean-up. Try, as root:")
    tries = [
        (f"ip netns exec {kitchen.netns} mpc -p {music.CLIENT_PORT} status", "what plays in kitchen"),
        (f"ip netns exec {bedroom.netns} mpc -p {music.CLIENT_PORT} status", "what plays in bedroom"),
        (f"ip netns exec {kitchen.netns} mpc -p {music.CLIENT_PORT} listall",
         f"{SERVER}'s library, through kitchen's proxy database"),
        (f"ip netns exec {musicpi.netns} mpc -h {musicpi.address} -p {MPD_PORT} listall", f"{SERVER}'s own mpd"),
        (f"ip netns exec {kitchen.netns} nfs-ls nfs://{musicpi.address}{EXPORT}/{MUSIC}", "the share, over NFS"),
        (f"cat {house.dir('kitchen') / 'mpd.conf'}", "as pistop-mdns rewrote it (mpd.conf.bak: before)"),
        (f"ip netns exec {kitchen.netns} env {_here()} --config {house.config('kitchen')} status",
         "what kitchen's client is doing"),
        (f"ip netns exec {bedroom.netns} env {_here()} --config {house.config('bedroom')} browse",
         "the music servers bedroom sees"),
        (f"ip -n {lan.bridge} link set {musicpi.switch_port} down", f"pull {SERVER}'s cable (up: plug it back)"),
        (f"nsenter -t {kitchen.pid} -n -u -m", "a shell in kitchen (exit to leave)"),
    ]
    for command, why in tries:
        out.write(f"    sudo {command}    # {why}\n")
    out.flush()
    _wait_for_ctrl_c()


def _namespace_ids(lan: lanmod.Lan) -> set[str]:
    """The kernel's ids of the LAN's network namespaces, as /proc/PID/ns/net names them."""
    names = [lan.bridge, *(h.netns for h in lan.hosts.values())]
    return {f"net:[{os.stat(f'/run/netns/{ns}').st_ino}]" for ns in names}


def _left_behind(prefix: str, namespaces: set[str], root: Path) -> list[str]:
    """What of the demo is still there: its namespaces, processes in them or using its files, its files."""
    left = []
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    names = [line.split()[0] for line in listed.splitlines() if line.startswith(f"{prefix}-")]
    if names:
        left.append("namespaces " + ", ".join(names))
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            netns = os.readlink(f"/proc/{entry}/ns/net")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        if netns in namespaces or str(root) in cmdline:
            pids.append(entry)
    if pids:
        left.append("processes " + ", ".join(pids))
    if root.exists():
        left.append(str(root))
    return left
