"""The whole chain with real components, in `mpd` mount mode (no kernel mount).

musicpi: a server mpd over three generated songs, nfs-ganesha exporting them
(NFSv3+4, rpcbind), and `pistop-mdns server`. kitchen: a board mpd run by a
real daemontools `supervise`, its mpd.conf still pointing at yesterday's
address, and `pistop-mdns client --mount-mode mpd`. Found over mDNS, the
client points mpd at musicpi, mpd reads the songs over real NFS and plays;
when the server stops, mpd is stopped.
"""

from __future__ import annotations

import signal

import pytest

from pistop_mdns.lan_music import (
    Ganesha,
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


def test_mpd_mode_brings_the_library_to_the_board_and_takes_it_away(make_lan, tmp_path):
    need_root()
    need("mpd", "mpc", package="mpd mpc")
    need("sox", package="sox")
    need("supervise", "svc", "svstat", package="daemontools")
    need("ganesha.nfsd", package="nfs-ganesha nfs-ganesha-vfs")
    need("rpcbind", package="rpcbind")
    need("nfs-ls", package="libnfs-utils")
    lan = make_lan(["musicpi", "kitchen"])
    lan.wait_for_multicast()
    musicpi, kitchen = lan["musicpi"], lan["kitchen"]

    # musicpi: songs, its mpd, NFS
    music = tmp_path / "musicpi" / "music"
    songs = make_songs(music)
    start_server_mpd(musicpi, tmp_path / "musicpi" / "mpd", music, songs)
    nfs = Ganesha(musicpi, tmp_path / "musicpi" / "ganesha", music, pseudo="/export")
    nfs.wait_served(kitchen, "ArtistA")

    # kitchen: mpd under supervise, pointing at an address the server no longer has
    board = tmp_path / "kitchen"
    (board / "playlists").mkdir(parents=True)
    conf = board / "mpd.conf"
    original = client_mpd_conf_text(board, "nfs://198.18.0.99/export", "198.18.0.99")
    conf.write_text(original)
    hooks = board / "hooks"
    hooks.mkdir()
    seen = board / "post_mount.env"
    (hooks / "post_mount").write_text(f"#!/bin/sh\nenv | grep ^PISTOP_ | sort > {seen}\n")
    (hooks / "post_mount").chmod(0o755)
    mpd = Supervised(kitchen, board / "service" / "mpd", mpd_run_script(conf))
    state = board / "state"

    with mpd.running():
        old_pid = wait_for(mpd.pid, 20, what="kitchen's mpd to run under supervise")
        client = Output(kitchen.spawn(pm_argv(
            "client", "--mount-mode", "mpd", "--service-manager", "daemontools",
            "--service-dir", str(board / "service"), "--mpd-conf", str(conf), "--state-dir", str(state),
            "--hooks-dirs", str(hooks), "--ready-timeout", "60"), env=ENV), "kitchen client")
        server = musicpi.spawn(pm_argv("server", "--export", "/export", "--mpd-port", "6600", "--music", "",
                                       "--state-dir", str(tmp_path / "musicpi" / "state")), env=ENV)
        server_out = Output(server, "musicpi server")

        client.wait(r"kitchen: up with musicpi", 90)

        # mpd.conf: exactly the three values changed, every other byte kept, one backup
        assert conf.read_text() == original.replace('"nfs://198.18.0.99/export"', '"nfs://198.18.0.11/export"') \
            .replace('"198.18.0.99"', '"198.18.0.11"')
        assert (board / "mpd.conf.bak").read_text() == original
        # mpd was running and its mpd.conf changed: restarted through svc
        client.wait(r"kitchen: restarted mpd \(mpd\.conf changed\): svc -t .*/service/mpd: up \(pid \d+\)", 5)
        new_pid = mpd.pid()
        assert new_pid is not None and new_pid != old_pid
        assert client.find(r"kitchen: share ready at nfs://198\.18\.0\.11/export")
        # the hook saw the server described
        assert "PISTOP_ADDRESS=198.18.0.11\n" in seen.read_text()
        assert "PISTOP_EVENT=post_mount\n" in seen.read_text()

        # the board's mpd now serves musicpi's library and plays it over NFS
        wait_for(lambda: mpc(kitchen, "listall").stdout.split() == songs, 30,
                 what="kitchen's mpd to list musicpi's songs")
        play(kitchen, "ArtistA/one.flac")
        status = kitchen.run(pm_argv("status", "--state-dir", str(state)), env=ENV)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "mpd:         running yes" in status.stdout

        # the server goes: the board's mpd is stopped
        mark = client.mark()
        server.send_signal(signal.SIGTERM)
        server_out.wait(r"withdrew", 30)
        wait_for(mpd.down, 30, what="svstat to report kitchen's mpd down")
        client.wait(r"kitchen: stopped mpd: svc -d .*/service/mpd: down", 10, start=mark)
        wait_for(lambda: kitchen.run(pm_argv("status", "--state-dir", str(state)), env=ENV).returncode == 1,
                 30, what="`pistop-mdns status` to exit 1")
