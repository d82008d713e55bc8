"""Real rsync: `pistop-mdns backup` into DEST/backup/HOST, and the example rsyncd.conf served by a real daemon.

Canary files around the backup tree must survive every run: rsync's --delete
may only act inside each path's own destination.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from pistop_mdns.actions import install_service
from tests.helpers import ENV, need, need_root, pm_argv, wait_for

pytestmark = pytest.mark.components

HOST = "kitchen"


def backup(*args: str, config: Path | None = None) -> subprocess.CompletedProcess:
    global_options = ["--config", str(config)] if config else []
    return subprocess.run(pm_argv(*global_options, "backup", "--hostname", HOST, *args), capture_output=True,
                          text=True, env=ENV, timeout=60)


@pytest.fixture
def disk(tmp_path):
    """Sources under tmp/src, a mounted-looking disk under tmp/disk with canaries all around."""
    need("rsync")
    src = tmp_path / "src"
    (src / "conf" / "sub").mkdir(parents=True)
    (src / "conf" / "a.conf").write_text("a\n")
    (src / "conf" / "sub" / "b.conf").write_text("b\n")
    (src / "hosts").write_text("127.0.0.1 localhost\n")
    (src / "other").write_text("not backed up\n")
    dest = tmp_path / "disk"
    (dest / "backup" / "bedroom").mkdir(parents=True)
    canaries = [dest / "canary", dest / "backup" / "canary", dest / "backup" / "bedroom" / "canary"]
    for c in canaries:
        c.write_text("still here\n")
    return src, dest, canaries


def test_backup_copies_files_and_directories_under_the_same_path(disk):
    src, dest, canaries = disk
    base = dest / "backup" / HOST / str(src).lstrip("/")
    # Leftovers from earlier runs: the stale one inside a backed-up directory goes,
    # the one beside it (another path's backup, say) stays.
    (base / "conf").mkdir(parents=True)
    (base / "conf" / "stale.conf").write_text("deleted upstream\n")
    (base / "beside").write_text("still here\n")
    canaries.append(base / "beside")
    proc = backup("--dest", str(dest), "--paths", f"{src}/conf,{src}/hosts")
    assert proc.returncode == 0, proc.stderr
    assert (base / "conf" / "a.conf").read_text() == "a\n"
    assert (base / "conf" / "sub" / "b.conf").read_text() == "b\n"
    assert (base / "hosts").read_text() == "127.0.0.1 localhost\n"
    assert not (base / "conf" / "stale.conf").exists()
    assert not (base / "other").exists()
    assert all(c.read_text() == "still here\n" for c in canaries)
    assert f"backup {src}/conf -> {dest}/backup/{HOST}{src}/conf/: rsync status 0" in proc.stderr
    assert f"backup {src}/hosts -> {dest}/backup/{HOST}{src}/: rsync status 0" in proc.stderr


def test_one_failing_path_fails_the_backup_but_not_the_others(disk):
    src, dest, canaries = disk
    proc = backup("--dest", str(dest), "--paths", f"{src}/missing,{src}/hosts")
    assert proc.returncode == 1
    assert f"backup {src}/missing: not copied: no such file or directory" in proc.stderr
    assert (dest / "backup" / HOST / str(src).lstrip("/") / "hosts").exists()


def test_rsync_options_replace_the_defaults(disk):
    src, dest, _ = disk
    proc = backup("--dest", str(dest), "--paths", f"{src}/conf", "--rsync-options", "-r,--exclude=sub")
    assert proc.returncode == 0, proc.stderr
    base = dest / "backup" / HOST / str(src).lstrip("/") / "conf"
    assert (base / "a.conf").exists() and not (base / "sub").exists()


def test_without_the_backup_directory_it_refuses_and_creates_nothing(disk, tmp_path):
    src, _, _ = disk
    empty = tmp_path / "not-mounted"
    empty.mkdir()
    proc = backup("--dest", str(empty), "--paths", f"{src}/hosts")
    assert proc.returncode == 1
    assert f"{empty}/backup does not exist: the backup disk is not mounted" in proc.stderr
    assert os.listdir(empty) == []


def test_dry_run_prints_rsyncs_plan_and_writes_nothing(disk):
    src, dest, _ = disk
    base = dest / "backup" / HOST / str(src).lstrip("/")
    base.mkdir(parents=True)
    proc = backup("--dest", str(dest), "--paths", f"{src}/conf", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "--dry-run" in proc.stdout and ">f+++++++++ a.conf" in proc.stdout
    assert os.listdir(base) == []


def test_a_symlink_in_the_backup_tree_cannot_lead_writes_out(disk, tmp_path):
    src, dest, _ = disk
    outside = tmp_path / "outside"
    outside.mkdir()
    host = dest / "backup" / HOST
    host.mkdir()
    (host / src.parts[1]).symlink_to(outside)
    proc = backup("--dest", str(dest), "--paths", f"{src}/hosts")
    assert proc.returncode == 1 and "through a symlink" in proc.stderr
    assert os.listdir(outside) == []


def test_a_path_holding_the_destination_is_refused(disk):
    src, dest, canaries = disk
    proc = backup("--dest", str(dest), "--paths", str(dest.parent))
    assert proc.returncode == 1 and "overlaps the backup destination" in proc.stderr
    assert all(c.read_text() == "still here\n" for c in canaries)


def test_unset_destination_is_a_configuration_error(disk, tmp_path):
    src, _, _ = disk
    # Not a client either (no mount point to fall back on): nothing says where to.
    config = tmp_path / "pistop-mdns.toml"
    config.write_text(f'[client]\nmount_mode = "direct"\nmpd_conf = "{tmp_path}/no-mpd.conf"\n')
    proc = backup("--paths", f"{src}/hosts", config=config)
    assert proc.returncode == 2 and "[backup] dest is not set" in proc.stderr


def test_on_a_client_the_mount_point_is_the_default_destination(disk, tmp_path):
    src, dest, _ = disk
    config = tmp_path / "pistop-mdns.toml"
    config.write_text(f'[client]\nmount_mode = "direct"\nmountpoint = "{dest}"\n')
    proc = backup("--paths", f"{src}/hosts", config=config)
    assert proc.returncode == 0, proc.stderr
    assert (dest / "backup" / HOST / str(src).lstrip("/") / "hosts").exists()


# ---------------------------------------------------------------- the rsync daemon


def test_the_example_rsyncd_conf_serves_the_music_read_only(make_lan):
    """A real rsync daemon with install-service's rsyncd.conf, in one LAN host, read from another."""
    need_root()
    need("rsync")
    lan = make_lan(["musicpi", "kitchen"])
    # The daemon reads as nobody: the directories must be world-readable (pytest's are not).
    top = Path(tempfile.mkdtemp(prefix="pm-rsyncd-"))
    try:
        top.chmod(0o755)
        music = top / "music"
        (music / "ArtistA").mkdir(parents=True)
        (music / "ArtistA" / "one.flac").write_bytes(b"fLaC-not-really")
        conf = top / "rsyncd.conf"
        conf.write_text(install_service.rsyncd_conf(str(music), 873))
        server = lan["musicpi"]
        # The lock file's directory: systemd's RuntimeDirectory=, the daemontools run script's mkdir.
        server.run(["mkdir", "-p", install_service.RSYNC_RUN_DIR], check=True)
        daemon = server.spawn(["rsync", "--daemon", "--no-detach", f"--config={conf}", "--log-file=/dev/stdout"])
        url = f"rsync://{server.address}/music/"
        kitchen = lan["kitchen"]
        listing = wait_for(lambda: (r := kitchen.run(["rsync", "-r", url], timeout=10)).returncode == 0 and r,
                           20, interval=0.2, what="the rsync daemon to answer")
        assert "ArtistA/one.flac" in listing.stdout
        copy = top / "copy"
        got = kitchen.run(["rsync", "-r", url, f"{copy}/"], timeout=20)
        assert got.returncode == 0 and (copy / "ArtistA" / "one.flac").read_bytes() == b"fLaC-not-really"
        (top / "upload.flac").write_bytes(b"x")
        put = kitchen.run(["rsync", str(top / "upload.flac"), url], timeout=20)
        assert put.returncode != 0 and "read only" in (put.stderr + put.stdout)
        assert not (music / "upload.flac").exists()
        assert daemon.poll() is None
    finally:
        subprocess.run(["rm", "-rf", str(top)], timeout=30)


def test_install_service_rsync_takes_music_pushed_with_the_password_from_its_own_subnet_only(make_lan):
    """install-service rsync in the server's LAN host, then a real daemon with what it wrote: the upload
    module writes as the music directory's owner, for the password, from 198.18.0.0/24 and nowhere else."""
    need_root()
    need("rsync", "systemctl")
    lan = make_lan(["musicpi", "kitchen"])
    server, kitchen = lan["musicpi"], lan["kitchen"]
    top = Path(tempfile.mkdtemp(prefix="pm-rsync-up-"))
    try:
        top.chmod(0o755)
        music = top / "music"
        music.mkdir()
        os.chown(music, 65534, 65534)  # mpd's user on a real server; nobody here
        mpd_conf = top / "mpd.conf"
        mpd_conf.write_text(f'music_directory "{music}"\n')
        root = top / "root"
        proc = server.run(pm_argv("install-service", "rsync", "--init", "systemd", "--root", str(root),
                                  "--mpd-conf", str(mpd_conf)), env=ENV, timeout=60)
        assert proc.returncode == 0, proc.stderr
        secrets = root / "etc/pistop-mdns/rsyncd.secrets"
        assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
        user, password = secrets.read_text().strip().split(":", 1)
        assert user == "music" and len(password) >= 20
        conf_text = (root / "etc/pistop-mdns/rsyncd.conf").read_text()
        assert "\thosts allow = 198.18.0.0/24\n" in conf_text
        assert "\tuid = nobody\n" in conf_text
        dropin = root / "etc/systemd/system/pistop-mdns-rsync.service.d/upload.conf"
        assert f"ReadWritePaths=-{music}\n" in dropin.read_text()
        assert "music can be pushed to rsync://music@musicpi/music-upload/" in proc.stderr
        conf = top / "rsyncd.conf"
        conf.write_text(conf_text.replace(install_service.RSYNC_SECRETS, str(secrets)))
        server.run(["mkdir", "-p", install_service.RSYNC_RUN_DIR], check=True)
        daemon = server.spawn(["rsync", "--daemon", "--no-detach", f"--config={conf}", "--log-file=/dev/stdout"])
        album = top / "Album"
        album.mkdir()
        (album / "track.flac").write_bytes(b"fLaC-new")
        pw = top / "music.pw"
        pw.write_text(password + "\n")
        pw.chmod(0o600)
        bad_pw = top / "bad.pw"
        bad_pw.write_text("guess\n")
        bad_pw.chmod(0o600)

        def push(host, address: str, password_file: Path, *extra: str) -> subprocess.CompletedProcess:
            return host.run(["rsync", "-rtv", *extra, f"--password-file={password_file}", f"{album}/",
                             f"rsync://music@{address}/music-upload/Album/"], timeout=30)

        ok = wait_for(lambda: (r := push(kitchen, server.address, pw)).returncode == 0 and r, 20, interval=0.2,
                      what="the upload to succeed")
        assert "track.flac" in ok.stdout
        copied = music / "Album" / "track.flac"
        assert copied.read_bytes() == b"fLaC-new" and copied.stat().st_uid == 65534
        wrong = push(kitchen, server.address, bad_pw)
        assert wrong.returncode != 0 and "auth failed on module music-upload" in wrong.stderr
        # The server's own loopback is not one of its LAN subnets: refused before any password (rsync 3.5
        # even hides the module from such a host; older versions say "access denied").
        (album / "second.flac").write_bytes(b"fLaC-2")
        local = push(server, "127.0.0.1", pw)
        assert local.returncode != 0
        assert re.search(r"Unknown module 'music-upload'|access denied to music-upload", local.stderr), local.stderr
        assert not (music / "Album" / "second.flac").exists()
        delete = push(kitchen, server.address, pw, "--delete")
        assert delete.returncode != 0 and "delete" in delete.stderr
        assert copied.exists()
        readonly = kitchen.run(["rsync", "-r", f"{album}/", f"rsync://{server.address}/music/Album2/"], timeout=30)
        assert readonly.returncode != 0 and "read only" in (readonly.stderr + readonly.stdout)
        assert daemon.poll() is None
    finally:
        subprocess.run(["rm", "-rf", str(top)], timeout=30)
