"""A room board nobody configured, with real components: the client sets it up by itself,
plays, and `install-service client --remove` leaves /etc as it was.

kitchen's own view of /etc and /var/lib is an overlay over this machine's (in its
private mount namespace: the machine's files are never written), made to look like
a fresh Debian board: Debian's /etc/mpd.conf as the mpd package installed it
(plus a null audio output standing in for the sound card), an empty
/etc/auto.master.d, no /etc/autofs.mounts, no pistop-mdns.toml, no
/var/lib/pistop-mdns. Real automount runs with Debian's /etc/auto.master (as
Debian's autofs.service does: already up, with no map of ours), a real mpd on that
mpd.conf, both under daemontools' supervise (no systemd here). The client gets no
setting about the mount, the autofs files or mpd.conf: it guesses them. It is told
only what this machine lacks: a kernel NFS client (the map entry is a bind mount
of musicpi's music directory, `--autofs-options fstype=bind`) and systemd
(`--service-manager daemontools`).

The same test on real Debian guests with kernel NFS and systemd, and no flag at
all, belongs to the system tier (tests/system/).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from pistop_mdns import files, fresh
from pistop_mdns.lan import Host
from pistop_mdns.lan_music import LIFETIME, Supervised, make_songs, mpc, mpd_run_script, play, start_server_mpd
from tests.helpers import ENV, Output, need, need_root, pm_argv, wait_for

pytestmark = pytest.mark.components

NULL_OUTPUT = 'audio_output {\n\ttype\t"null"\n\tname\t"no sound card here"\n}\n'
# Files mpd itself writes under /var/lib/mpd while it runs: not the client's doing.
MPD_OWN = ("/var/lib/mpd/state", "/var/lib/mpd/sticker.sql", "/var/lib/mpd/tag_cache")


def sh(host: Host, script: str, timeout: float = 60) -> str:
    proc = host.run(["sh", "-ec", script], timeout=timeout)
    assert proc.returncode == 0, f"{script}: exit {proc.returncode}: {proc.stderr}"
    return proc.stdout


def overlay(host: Host, directory: str, work: Path) -> None:
    """`directory`, in `host` only, becomes writable without the machine's own being written."""
    name = directory.strip("/").replace("/", "-")
    upper, scratch = work / f"{name}-upper", work / f"{name}-work"
    upper.mkdir(parents=True)
    scratch.mkdir()
    sh(host, f"mount -t overlay overlay -o lowerdir={directory},upperdir={upper},workdir={scratch} {directory}")


def state_of_the_board(host: Host) -> list[str]:
    """/etc, and what pistop-mdns may touch under /var/lib: path, type, mode, owner, checksum."""
    own = " ".join(f"-path {p} -prune -o" for p in MPD_OWN)
    return sh(host, f"find /etc /var/lib/mpd /var/lib/pistop-mdns {own} -printf '%p %y %m %U:%G %l\\n' "
                    "2>/dev/null | sort; find /etc -type f -exec sha256sum {} + | sort", timeout=120).splitlines()


def test_a_board_nobody_configured_sets_itself_up_plays_and_is_taken_back(make_lan, tmp_path):
    need_root()
    need("mpd", "mpc", package="mpd mpc")
    need("sox", package="sox")
    need("supervise", "svc", "svstat", package="daemontools")
    need("automount", package="autofs")
    need("mount.nfs4", package="nfs-common")
    need("setsid", "mountpoint", package="util-linux")
    if not Path("/dev/autofs").exists():
        pytest.fail("/dev/autofs is missing: this kernel has no autofs support")
    if "overlay" not in Path("/proc/filesystems").read_text():
        pytest.fail("this kernel has no overlay file system")
    debian_conf = Path("/etc/mpd.conf").read_text()
    assert files.mpd_databases(debian_conf) == [] and files.mpd_conf_value(debian_conf, "db_file"), \
        "/etc/mpd.conf here is not Debian's own: this test needs the file the mpd package installs"

    lan = make_lan(["musicpi", "kitchen"])
    lan.wait_for_multicast()
    musicpi, kitchen = lan["musicpi"], lan["kitchen"]
    music = tmp_path / "musicpi" / "music"
    songs = make_songs(music)
    music.chmod(0o755)  # kitchen's mpd reads it as Debian's user mpd
    start_server_mpd(musicpi, tmp_path / "musicpi" / "mpd", music, songs)

    # kitchen: a fresh Debian board, in its own view of the file system
    for directory in ("/etc", "/var/lib"):
        overlay(kitchen, directory, tmp_path / "overlay")
    sh(kitchen, "rm -rf /etc/pistop-mdns /var/lib/pistop-mdns /etc/autofs.mounts /var/lib/mpd/MDrive && "
                "find /etc/auto.master.d -mindepth 1 -delete")
    sh(kitchen, f"printf '%s' '{NULL_OUTPUT}' >> /etc/mpd.conf")
    before = state_of_the_board(kitchen)
    owners_conf = sh(kitchen, "cat /etc/mpd.conf")

    services = tmp_path / "kitchen" / "service"
    autofs = Supervised(kitchen, services / "autofs",
                        f"#!/bin/sh\nexec 2>&1\nexec setsid timeout {LIFETIME} automount -f -v\n")
    mpd = Supervised(kitchen, services / "mpd", mpd_run_script(Path("/etc/mpd.conf")), down=True)
    with autofs.running(), mpd.running():
        wait_for(autofs.up, 20, what="automount to run")
        client = Output(kitchen.spawn(pm_argv(
            "client", "--service-manager", "daemontools", "--service-dir", str(services),
            "--autofs-options", "fstype=bind", "--autofs-location", ":{export}"), env=ENV), "kitchen client")
        client.wait(r"kitchen: set up for autofs: ", 60)
        assert client.find(r"^kitchen: mount_mode autofs \(guessed: autofs and nfs-common are installed \(\S+"
                           r"automount, \S+mount\.nfs4\)\)$")
        server = Output(musicpi.spawn(pm_argv("server", "--export", str(music), "--mpd-port", "6600", "--music", "",
                                              "--state-dir", str(tmp_path / "musicpi" / "state")), env=ENV),
                        "musicpi server")
        client.wait(r"kitchen: up with musicpi", 120)

        # what it created, exactly
        assert sh(kitchen, "cat /etc/auto.master.d/mpd.autofs") == fresh.MASTER_TEXT
        assert sh(kitchen, "cat /etc/autofs.mounts") == fresh.MAP_TEXT + f"/var/lib/mpd/MDrive -fstype=bind :{music}\n"
        conf = sh(kitchen, "cat /etc/mpd.conf")
        assert sh(kitchen, "cat /etc/mpd.conf.bak") == owners_conf
        assert conf == owners_conf.replace('"/var/lib/mpd/music"', '"/var/lib/mpd/MDrive"').replace(
            "\ndb_file", "\n#db_file") + 'database {\n    plugin "proxy"\n    host "198.18.0.11"\n    port "6600"\n}\n'
        assert sh(kitchen, f"cat {fresh.RECORD}") == fresh.record_text((
            fresh.Entry("created", "/etc/auto.master.d/mpd.autofs"),
            fresh.Entry("created", "/etc/autofs.mounts"),
            fresh.Entry("created", "/etc/autofs.mounts.bak"),
            fresh.Entry("directory", "/var/lib/mpd/MDrive"),
            fresh.Entry("changed", "/etc/mpd.conf", "/var/lib/pistop-mdns/original/etc/mpd.conf"),
            fresh.Entry("created", "/etc/mpd.conf.bak"),
        ))
        assert client.find(r"kitchen: reloaded autofs \(map changed\)")

        # it plays what the server has, read through autofs from the share
        wait_for(lambda: mpc(kitchen, "listall", port=6600).stdout.split() == songs, 60,
                 what="kitchen's mpd to list musicpi's songs")
        play(kitchen, "ArtistB/three.flac", port=6600)
        assert "/var/lib/mpd/MDrive" in sh(kitchen, "grep ' /var/lib/mpd/MDrive ' /proc/self/mountinfo")

        # the owner takes it all back
        client.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: client.proc.poll() is not None, 60, what="the client to stop")
        removed = kitchen.run(pm_argv("install-service", "client", "--remove", "--init", "daemontools",
                                      "--service-manager", "daemontools", "--service-dir", str(services)),
                              env=ENV, timeout=120)
        assert removed.returncode == 0, removed.stderr
        assert "restored /etc/mpd.conf as it was before pistop-mdns changed it" in removed.stderr
        assert "restart mpd on the restored mpd.conf: svc -t" in removed.stderr
        assert "reload autofs so it lets go of the share: svc -h" in removed.stderr
        after = state_of_the_board(kitchen)
        assert sorted(set(after) - set(before)) == [] and sorted(set(before) - set(after)) == [], (
            removed.stderr + sh(kitchen, "grep MDrive /proc/self/mountinfo || true") + autofs.out.text())
        assert "/var/lib/mpd/MDrive" not in sh(kitchen, "cat /proc/self/mountinfo")
        wait_for(lambda: mpc(kitchen, "status", port=6600).returncode == 0, 30,
                 what="kitchen's mpd to run again on the owner's mpd.conf")
        server.proc.send_signal(signal.SIGTERM)
