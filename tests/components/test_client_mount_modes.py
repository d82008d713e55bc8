"""The client's `direct` and `autofs` modes with real processes.

This kernel has no NFS client, so the exact NFS argv are unit-tested
(tests/unit/test_machine.py) and here a bind mount of musicpi's music
directory stands in for the share: the hosts share the file system, and the
mount happens in kitchen's private mount namespace. Everything else is real:
mount/umount, a busy mount, daemontools' supervise running mpd and the autofs
automount daemon, mpd playing from the mount point, hooks, the LCD over UDP.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from pistop_mdns.lan import Host
from pistop_mdns.lan_music import (
    LIFETIME,
    Supervised,
    client_mpd_conf_text,
    make_songs,
    mpc,
    mpd_run_script,
    play,
    start_server_mpd,
)
from tests.helpers import ENV, Output, need, need_root, pm_argv, wait_for

pytestmark = pytest.mark.components

LCD_LISTENER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 1806))
print("listening", flush=True)
while True:
    print(s.recv(4096).decode(), end="", flush=True)
"""


def server(host: Host, export: Path, state: Path, *extra: str) -> tuple:
    proc = host.spawn(pm_argv("server", "--export", str(export), "--mpd-port", "6600", "--music", "",
                              "--state-dir", str(state), *extra), env=ENV)
    return proc, Output(proc, f"{host.name} server")


def is_mounted(host: Host, path: Path) -> bool:
    """In `host`'s mount namespace; an autofs directory that is gone counts as not mounted."""
    r = host.run(["mountpoint", str(path)], timeout=10)
    assert r.returncode in (0, 32) or "No such file or directory" in r.stderr, \
        f"mountpoint {path}: exit {r.returncode}: {r.stderr}"
    return r.returncode == 0


def status_code(host: Host, state: Path) -> int:
    return host.run(pm_argv("status", "--state-dir", str(state)), env=ENV).returncode


def hook(directory: Path, stage: str, body: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / stage).write_text("#!/bin/sh\n" + body)
    (directory / stage).chmod(0o755)


def test_direct_mode_waits_for_the_marker_plays_and_stops_mpd_before_unmounting(make_lan, tmp_path):
    need_root()
    need("mpd", "mpc", package="mpd mpc")
    need("sox", package="sox")
    need("supervise", "svc", "svstat", package="daemontools")
    need("mount", "umount", "mountpoint", package="mount util-linux")
    lan = make_lan(["musicpi", "kitchen"])
    lan.wait_for_multicast()
    musicpi, kitchen = lan["musicpi"], lan["kitchen"]

    music = tmp_path / "musicpi" / "music"
    songs = make_songs(music)
    start_server_mpd(musicpi, tmp_path / "musicpi" / "mpd", music, songs)
    lcd = Output(musicpi.spawn(["timeout", LIFETIME, sys.executable, "-c", LCD_LISTENER, musicpi.address]),
                 "musicpi LCD")
    lcd.wait("listening", 20)

    board = tmp_path / "kitchen"
    mountpoint = board / "MDrive"
    mountpoint.mkdir(parents=True)
    (board / "playlists").mkdir()
    conf = board / "mpd.conf"
    original = client_mpd_conf_text(board, str(mountpoint), "198.18.0.99")
    conf.write_text(original)
    mpd = Supervised(kitchen, board / "service" / "mpd", mpd_run_script(conf), down=True)
    events = board / "events"
    check = (f'{{ echo "$PISTOP_EVENT: $(svstat {mpd.directory} | cut -d" " -f2)"; '
             f"mountpoint -q {mountpoint} && echo mounted || echo not-mounted; }} >> {events}\n")
    hook(board / "hooks", "pre_unmount", check)
    hook(board / "hooks", "post_unmount", check)
    state = board / "state"

    with mpd.running():
        assert mpd.down()
        client = Output(kitchen.spawn(pm_argv(
            "client", "--mount-mode", "direct", "--mount-fstype", "none", "--mount-options", "bind,ro",
            "--mount-source", "{export}", "--mountpoint", str(mountpoint), "--ready-marker", "data/stats.db",
            "--ready-timeout", "120", "--service-manager", "daemontools", "--service-dir", str(board / "service"),
            "--mpd-conf", str(conf), "--state-dir", str(state), "--hooks-dirs", str(board / "hooks"),
            "--lcd-host", musicpi.address), env=ENV), "kitchen client")
        server_proc, server_out = server(musicpi, music, tmp_path / "musicpi" / "state")

        # mounted, but the marker is missing: mpd must not start on it
        client.wait(rf"kitchen: mounted {music} at {mountpoint}", 60)
        assert is_mounted(kitchen, mountpoint)
        assert mpd.down()
        assert conf.read_text() == original
        (music / "data").mkdir()
        (music / "data" / "stats.db").write_text("")

        client.wait(r"kitchen: up with musicpi", 120)
        assert client.find(rf"kitchen: share ready at {mountpoint} \(data/stats\.db found\)")
        assert client.find(r"kitchen: started mpd: svc -u .*/service/mpd: up \(pid \d+\)")
        assert mpd.up()
        # direct mode: only the proxy host changed (port and music_directory already right)
        assert conf.read_text() == original.replace('"198.18.0.99"', '"198.18.0.11"')
        wait_for(lambda: mpc(kitchen, "listall").stdout.split() == songs, 30,
                 what="kitchen's mpd to list musicpi's songs")
        play(kitchen, "ArtistB/three.flac")  # read from the mount point
        lcd.wait(r"^3 0 0:kitchen On$", 20)
        assert lcd.find(r"^0 0 3:Load \d")
        assert lcd.find(r"^1 0 0:198\.18\.0\.12$")
        assert status_code(kitchen, state) == 0

        mark = client.mark()
        server_proc.send_signal(signal.SIGTERM)
        client.wait(r"kitchen: hook post_unmount: ran ", 60, start=mark)
        stopped = client.find(r"kitchen: stopped mpd: svc -d ", mark)
        unmounted = client.find(rf"kitchen: unmounted {mountpoint}$", mark)
        assert stopped and unmounted, client.text()
        assert client.lines.index(stopped) < client.lines.index(unmounted), "mpd stops before the unmount"
        assert events.read_text().splitlines() == [
            "pre_unmount: up", "mounted", "post_unmount: down", "not-mounted"]
        assert mpd.down()
        assert not is_mounted(kitchen, mountpoint)
        lcd.wait(r"^3 0 3:kitchen MusicOff$", 20)
        wait_for(lambda: status_code(kitchen, state) == 1, 30, what="`pistop-mdns status` to exit 1")


def test_a_busy_mount_is_given_up_and_a_power_off_unmounts_it_lazily_after_sync(make_lan, tmp_path):
    need_root()
    need("mount", "umount", "mountpoint", package="mount util-linux")
    lan = make_lan(["musicpi", "kitchen"])
    lan.wait_for_multicast()
    musicpi, kitchen = lan["musicpi"], lan["kitchen"]
    music = tmp_path / "musicpi" / "music"
    (music / "data").mkdir(parents=True)
    (music / "data" / "stats.db").write_text("")

    board = tmp_path / "kitchen"
    mountpoint = board / "MDrive"
    mountpoint.mkdir(parents=True)
    (board / "mpd.conf").write_text(client_mpd_conf_text(board, str(mountpoint), "198.18.0.99"))
    events = board / "events"
    bin_dir = board / "bin"
    hook(bin_dir, "sync", f"echo sync >> {events}\nexec /bin/sync\n")  # sync, and say so
    hook(bin_dir, "power-off", f"echo poweroff >> {events}\ntouch {board / 'powered-off'}\n")
    state = board / "state"
    env = {**ENV, "PATH": f"{bin_dir}:{ENV['PATH']}"}
    client_proc = kitchen.spawn(pm_argv(
        "client", "--mount-mode", "direct", "--mount-fstype", "none", "--mount-options", "bind,ro",
        "--mount-source", "{export}", "--mountpoint", str(mountpoint), "--service-manager", "none",
        "--mpd-conf", str(board / "mpd.conf"), "--state-dir", str(state), "--hooks-dirs", str(board / "hooks"),
        "--umount-retries", "2", "--power-off", "--force-umount", "--flap-settle", "0",
        "--poweroff-command", str(bin_dir / "power-off")), env=env)
    client = Output(client_proc, "kitchen client")

    first, first_out = server(musicpi, music, tmp_path / "musicpi" / "state", "--stop-reason", "stopping")
    client.wait(r"kitchen: up with musicpi", 60)
    busy = Output(kitchen.spawn(["timeout", LIFETIME, "sh", "-c", f"cd {mountpoint} && echo inside && exec sleep 600"]),
                  "busy process")
    busy.wait("inside", 20)

    # stopping (no power-off): umount -f fails on the busy mount, twice, then a warning
    mark = client.mark()
    first.send_signal(signal.SIGTERM)
    client.wait(rf"warning: kitchen: unmount {mountpoint}: umount -f -- {mountpoint}: exit 32: .*target is busy.* "
                rf"\(gave up after 2 tries\); carrying on", 60, start=mark)
    client.wait(r"kitchen: could not tell the server|kitchen: told the server this board is down", 30, start=mark)
    assert is_mounted(kitchen, mountpoint)
    assert not events.exists(), "no sync, no power-off for a server that only stops"

    # the server comes back and will power off: the mount is already there (a no-op), then lazily unmounted
    mark = client.mark()
    second, _ = server(musicpi, music, tmp_path / "musicpi" / "state", "--stop-reason", "poweroff")
    client.wait(r"kitchen: up with musicpi", 60, start=mark)
    assert client.find(rf"kitchen: {music} is already mounted at {mountpoint}", mark)
    mark = client.mark()
    second.send_signal(signal.SIGTERM)
    client.wait(r"kitchen: powering off: ", 60, start=mark)
    assert client.find(rf"kitchen: unmounted {mountpoint} lazily", mark)
    assert events.read_text().splitlines() == ["sync", "poweroff"]
    assert (board / "powered-off").exists()
    assert not is_mounted(kitchen, mountpoint)
    assert busy.proc.poll() is None, "a lazy unmount leaves the process that held it alone"
    wait_for(lambda: client_proc.poll() is not None, 30, what="the client to stop after powering off")


def test_a_share_mounted_at_start_without_a_server_is_torn_down(make_lan, tmp_path):
    need_root()
    need("mount", "umount", "mountpoint", package="mount util-linux")
    lan = make_lan(["kitchen"])
    kitchen = lan["kitchen"]
    share = tmp_path / "share"
    (share / "data").mkdir(parents=True)
    mountpoint = tmp_path / "MDrive"
    mountpoint.mkdir()
    kitchen.run(["mount", "--bind", str(share), str(mountpoint)], check=True)
    assert is_mounted(kitchen, mountpoint)
    (tmp_path / "mpd.conf").write_text(client_mpd_conf_text(tmp_path, str(mountpoint), "198.18.0.99"))
    state = tmp_path / "state"

    client = Output(kitchen.spawn(pm_argv(
        "client", "--mount-mode", "direct", "--mountpoint", str(mountpoint), "--startup-wait", "1",
        "--service-manager", "none", "--mpd-conf", str(tmp_path / "mpd.conf"), "--state-dir", str(state),
        "--hooks-dirs", str(tmp_path / "hooks")), env=ENV), "kitchen client")

    client.wait(r"kitchen: share mounted at start but no server found -> stop mpd, unmount", 30)
    client.wait(rf"kitchen: unmounted {mountpoint}$", 30)
    assert not is_mounted(kitchen, mountpoint)
    wait_for(lambda: status_code(kitchen, state) == 1, 30, what="the client to wait, not up")


def test_autofs_mode_points_the_map_starts_automount_and_stops_it(make_lan, tmp_path):
    need_root()
    need("automount", package="autofs")
    need("supervise", "svc", "svstat", package="daemontools")
    need("setsid", "mountpoint", package="util-linux")
    if not Path("/dev/autofs").exists():
        pytest.fail("/dev/autofs is missing: this kernel has no autofs support")
    lan = make_lan(["musicpi", "kitchen"])
    lan.wait_for_multicast()
    musicpi, kitchen = lan["musicpi"], lan["kitchen"]
    music = tmp_path / "musicpi" / "music"
    (music / "data").mkdir(parents=True)
    (music / "data" / "stats.db").write_text("")
    (music / "song.flac").write_text("")

    board = tmp_path / "kitchen"
    auto = board / "auto"
    auto.mkdir(parents=True)
    master = board / "auto.master"
    amap = board / "auto.music"
    master.write_text(f"{auto} {amap} --timeout=60\n")
    old_map = "# music share, kept by pistop-mdns\nmusic -fstype=bind :/srv/yesterday\n"
    amap.write_text(old_map)
    automount = Supervised(kitchen, board / "service" / "autofs",
                           f"#!/bin/sh\nexec 2>&1\nexec setsid timeout {LIFETIME} automount -f -v {master}\n",
                           down=True)
    mpd = Supervised(kitchen, board / "service" / "mpd", "#!/bin/sh\nexec sleep 600\n", down=True)
    (board / "mpd.conf").write_text(client_mpd_conf_text(board, str(auto / "music"), "198.18.0.99"))
    state = board / "state"

    with automount.running(), mpd.running():
        client = Output(kitchen.spawn(pm_argv(
            "client", "--mount-mode", "autofs", "--autofs-master", str(master), "--autofs-map", str(amap),
            "--autofs-key", "music", "--autofs-options", "fstype=bind", "--autofs-location", ":{export}",
            "--ready-marker", "data/stats.db", "--service-manager", "daemontools",
            "--service-dir", str(board / "service"), "--mpd-conf", str(board / "mpd.conf"),
            "--state-dir", str(state), "--hooks-dirs", str(board / "hooks"), "--flap-settle", "0"), env=ENV),
            "kitchen client")
        assert client.proc.poll() is None
        first, _ = server(musicpi, music, tmp_path / "musicpi" / "state")

        client.wait(r"kitchen: up with musicpi", 60)
        assert amap.read_text() == old_map.replace(":/srv/yesterday", f":{music}")
        assert (board / "auto.music.bak").read_text() == old_map
        assert client.find(r"kitchen: started autofs: svc -u .*/service/autofs: up")
        assert client.find(rf"kitchen: share ready at {auto}/music \(data/stats\.db found\)")
        assert automount.up() and mpd.up()
        assert is_mounted(kitchen, auto / "music")
        listing = kitchen.run(["ls", str(auto / "music")], timeout=20).stdout.split()
        assert listing == ["data", "song.flac"]

        mark = client.mark()
        first.send_signal(signal.SIGTERM)
        client.wait(r"kitchen: stopped autofs: svc -d .*/service/autofs: down", 60, start=mark)
        stopped_mpd = client.find(r"kitchen: stopped mpd", mark)
        unmounted = client.find(rf"kitchen: unmounted {auto}/music$", mark)
        assert stopped_mpd and unmounted, client.text()
        assert client.lines.index(stopped_mpd) < client.lines.index(unmounted)
        assert automount.down() and mpd.down()
        assert not is_mounted(kitchen, auto / "music")

        # the server comes back: autofs is started again on the unchanged map
        mark = client.mark()
        second, _ = server(musicpi, music, tmp_path / "musicpi" / "state")
        client.wait(r"kitchen: up with musicpi", 60, start=mark)
        assert client.find(rf"kitchen: music in {amap} already points at :{music}", mark)
        assert automount.up()
        assert is_mounted(kitchen, auto / "music")
        second.send_signal(signal.SIGTERM)
        wait_for(automount.down, 60, what="autofs to be stopped again")
