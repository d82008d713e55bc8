"""Hung commands (issue 5): an umount or systemctl that never returns is killed at the
timeout, the plan reports it, and the client's state machine carries on."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from pistop_mdns.lan import Host
from tests.helpers import ENV, Output, need, pm_argv

pytestmark = pytest.mark.components


def stub(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / name).write_text("#!/bin/sh\n" + body)
    (bin_dir / name).chmod(0o755)


def server(host: Host, export: Path, state: Path) -> tuple[subprocess.Popen, Output]:
    proc = host.spawn(pm_argv("server", "--export", str(export), "--mpd-port", "6600", "--music", "",
                              "--state-dir", str(state), "--stop-reason", "stopping"), env=ENV)
    return proc, Output(proc, f"{host.name} server")


def processes_named(host: Host, name: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True, timeout=10).stdout
    found = []
    for pid in out.split():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if name in cmdline:
            found.append(cmdline)
    return found


def test_a_hung_umount_is_killed_and_the_client_carries_on(make_lan, tmp_path):
    need("mount", "mountpoint", package="mount util-linux")
    lan = make_lan(["musicpi", "kitchen"])
    musicpi, kitchen = lan["musicpi"], lan["kitchen"]
    music = tmp_path / "music"
    (music / "data").mkdir(parents=True)
    board = tmp_path / "kitchen"
    mountpoint = board / "MDrive"
    mountpoint.mkdir(parents=True)
    (board / "mpd.conf").write_text('database {\n    plugin "proxy"\n    host "198.18.0.99"\n}\n')
    bin_dir = board / "bin"
    stub(bin_dir, "umount", "echo hanging >&2\nexec sleep 600\n")  # an NFS server gone mid-unmount
    client = Output(kitchen.spawn(pm_argv(
        "client", "--mount-mode", "direct", "--mount-fstype", "none", "--mount-options", "bind,ro",
        "--mount-source", "{export}", "--mountpoint", str(mountpoint), "--service-manager", "none",
        "--mpd-conf", str(board / "mpd.conf"), "--state-dir", str(board / "state"), "--timeout", "2",
        "--umount-retries", "2", "--flap-settle", "0", "--hooks-dirs", str(board / "hooks")),
        env={**ENV, "PATH": f"{bin_dir}:{ENV['PATH']}"}), "kitchen client")
    first, _ = server(musicpi, music, tmp_path / "state-musicpi")
    client.wait("kitchen: up with musicpi", 60)
    mark = client.mark()
    first.send_signal(signal.SIGTERM)
    client.wait(rf"warning: kitchen: unmount {mountpoint}: umount -f -- {mountpoint}: no answer, killed after the "
                rf"timeout \(gave up after 2 tries\)", 60, start=mark)
    client.wait(r"kitchen: (told|could not tell) the server", 30, start=mark)
    assert not processes_named(kitchen, "sleep 600"), "the hung umount was not killed"
    # the state machine carries on: the server comes back, the (still mounted) share is used again
    mark = client.mark()
    server(musicpi, music, tmp_path / "state-musicpi")
    client.wait("kitchen: up with musicpi", 60, start=mark)
    assert client.proc.poll() is None


def test_a_hung_systemctl_fails_the_bring_up_once_and_the_retry_succeeds(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    musicpi, kitchen = lan["musicpi"], lan["kitchen"]
    music = tmp_path / "music"
    (music / "Music").mkdir(parents=True)
    board = tmp_path / "kitchen"
    board.mkdir()
    (board / "mpd.conf").write_text('database {\n    plugin "proxy"\n    host "198.18.0.99"\n}\n')
    bin_dir = board / "bin"
    stub(bin_dir, "systemctl", f'echo "$@" >> {board}/systemctl.log\nexec sleep 600\n')
    stub(bin_dir, "nfs-ls", "echo 'drwxr-xr-x  2  0  0  4096 Music'\n")  # the share looks ready
    client = Output(kitchen.spawn(pm_argv(
        "client", "--mount-mode", "mpd", "--service-manager", "systemd", "--mpd-conf", str(board / "mpd.conf"),
        "--state-dir", str(board / "state"), "--timeout", "2", "--hooks-dirs", str(board / "hooks")),
        env={**ENV, "PATH": f"{bin_dir}:{ENV['PATH']}"}), "kitchen client")
    srv, _ = server(musicpi, music, tmp_path / "state-musicpi")
    client.wait(r"kitchen: gave up bringing up musicpi \(.*no answer, killed after the timeout.*\); will retry in 30 s "
                r"or when its record changes", 90)
    assert not processes_named(kitchen, "sleep 600"), "the hung systemctl was not killed"
    assert "mpd.service" in (board / "systemctl.log").read_text()
    # systemd answers again; the next record update (a server restart) brings the board up
    stub(bin_dir, "systemctl", f'echo "$@" >> {board}/systemctl.log\nexit 0\n')
    mark = client.mark()
    srv.send_signal(signal.SIGTERM)
    srv.wait(15)
    server(musicpi, music, tmp_path / "state-musicpi")
    client.wait("kitchen: up with musicpi", 90, start=mark)
    assert client.proc.poll() is None
