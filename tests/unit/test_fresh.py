"""A board nobody configured (fresh.py): the guesses and their sources, what is created and
recorded, exact file contents, and how --remove and the package's postrm take it back.

Everything happens under a temporary root: nothing here reads or writes the real /etc.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from pathlib import Path

import pytest

from pistop_mdns import config, derive, files, fresh
from pistop_mdns.actions import install_service as svc
from pistop_mdns.config import ConfigError
from pistop_mdns.executor import Result

REPO = Path(__file__).resolve().parents[2]
POSTRM = REPO / "debian" / "pistop-mdns.postrm"

# The settings Debian 12's /etc/mpd.conf leaves uncommented (mpd 0.23.12), with a
# few of its comments: no database block, a db_file, music under /var/lib/mpd.
DEBIAN_MPD_CONF = """\
# An example configuration file for MPD.
# Read the user manual for documentation: http://www.musicpd.org/doc/user/

# Files and directories #######################################################
music_directory\t\t"/var/lib/mpd/music"
playlist_directory\t\t"/var/lib/mpd/playlists"
db_file\t\t\t"/var/lib/mpd/tag_cache"
#log_file\t\t\t"/var/log/mpd/mpd.log"
state_file\t\t\t"/var/lib/mpd/state"
sticker_file                   "/var/lib/mpd/sticker.sql"
user\t\t\t\t"mpd"
bind_to_address\t\t\t"localhost"
#database {
#       plugin "proxy"
#       host "other.mpd.host"
#}
input {
        plugin "curl"
}
filesystem_charset\t\t"UTF-8"
"""

PISTOP_MPD_CONF = 'music_directory "/var/lib/mpd/MDrive/Music"\ndatabase {\n    plugin "proxy"\n    host "MusicPI"\n}\n'
SBIN = ("/usr/sbin/automount", "/usr/sbin/mount.nfs", "/usr/sbin/mount.nfs4", "/usr/bin/mpd")


def make_root(tmp_path: Path, programs=SBIN, mpd_conf: str | None = DEBIAN_MPD_CONF) -> Path:
    """A board's root: Debian's layout, the programs given (as stubs), Debian's mpd.conf."""
    root = tmp_path / "root"
    for directory in ("etc/auto.master.d", "var/lib/mpd/music", "var/lib/mpd/playlists"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "etc/auto.master").write_text("+dir:/etc/auto.master.d\n+auto.master\n")
    for program in programs:
        path = root / program.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    if mpd_conf is not None:
        (root / "etc/mpd.conf").write_text(mpd_conf)
        (root / "etc/mpd.conf").chmod(0o640)
    return root


def load(**client) -> config.Config:
    flags = {("general", "hostname"): "kitchen"}
    flags.update({("client", k): v for k, v in client.items()})
    return config.load("/dev/null", None, flags)


def guessed(root: Path, **client) -> config.Config:
    cfg = load(**client)
    return fresh.guess(cfg, fresh.look(cfg, str(root)))


def source(cfg: config.Config, name: str) -> str:
    return cfg.sources[("client", name)]


def listing(root: Path) -> dict[str, str]:
    """Every path under root with its type, mode and content checksum: what `apt purge` must restore."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            what = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(root))] = f"{oct(st.st_mode)} {st.st_uid}:{st.st_gid} {what}"
    return out


# ---------------------------------------------------------------- the mount mode


@pytest.mark.parametrize("programs, mode, why", [
    (SBIN, "autofs", "guessed: autofs and nfs-common are installed (/usr/sbin/automount, /usr/sbin/mount.nfs4)"),
    (("/usr/sbin/mount.nfs", "/usr/sbin/mount.nfs4"), "direct",
     "guessed: nfs-common is installed (/usr/sbin/mount.nfs4), autofs is not"),
    (("/usr/sbin/automount",), "mpd",
     "guessed: autofs is installed but nfs-common is not (no mount.nfs): mpd reads the share with its own NFS plugin"),
    ((), "mpd",
     "guessed: neither autofs nor nfs-common is installed (no mount.nfs): mpd reads the share with its own NFS "
     "plugin"),
])
def test_the_mount_mode_is_what_the_installed_packages_allow(tmp_path, programs, mode, why):
    cfg = guessed(make_root(tmp_path, programs))
    assert (cfg.client.mount_mode, source(cfg, "mount_mode")) == (mode, why)


def test_an_explicit_mount_mode_wins_over_the_guess(tmp_path):
    cfg = guessed(make_root(tmp_path), mount_mode="direct")
    assert (cfg.client.mount_mode, source(cfg, "mount_mode")) == ("direct", "option --mount-mode")
    assert cfg.client.autofs_map is None  # no autofs files for a board told to mount directly


def test_the_owners_autofs_map_is_used_as_it_is_and_nothing_is_guessed_for_it(tmp_path):
    root = make_root(tmp_path, programs=())  # even without autofs installed: the owner's files say autofs
    (root / "etc/auto.master.d/music.autofs").write_text("/var/lib/mpd /etc/autofs.mounts --timeout=60\n")
    (root / "etc/mpd.conf").write_text(PISTOP_MPD_CONF)
    cfg = guessed(root)
    assert cfg.client.mount_mode == "autofs"
    assert source(cfg, "mount_mode") == ("derived from /etc/auto.master.d/music.autofs, which names the map "
                                         "/etc/autofs.mounts")
    for name in ("autofs_master", "autofs_map", "autofs_key", "mountpoint", "add_proxy_block", "set_music_directory"):
        assert source(cfg, name) == "default", name
    assert fresh.needs(cfg, fresh.look(cfg, str(root))) == ()


def test_a_pistop_house_board_needs_nothing_and_keeps_derive_s_values(tmp_path):
    """mount_mode set as a pistop house sets it, map and mpd.conf its own: derive.py decides, as before."""
    root = make_root(tmp_path)
    (root / "etc/mpd.conf").write_text(PISTOP_MPD_CONF)
    cfg = guessed(root, mount_mode="direct")
    assert [source(cfg, n) for n in ("mountpoint", "add_proxy_block", "set_music_directory")] == ["default"] * 3
    outside = cfg.replace("client", "mpd_conf", str(root / "etc/mpd.conf"), "test")  # derive reads the real path
    assert derive.client(outside).client.mountpoint == "/var/lib/mpd/MDrive"  # parent of music_directory
    assert fresh.needs(cfg, fresh.look(cfg, str(root))) == ()


# ---------------------------------------------------------------- mpd.conf


def test_debians_mpd_conf_gets_a_proxy_block_music_in_the_share_and_pistops_mount_point(tmp_path):
    cfg = guessed(make_root(tmp_path))
    why = "guessed: /etc/mpd.conf has no database block"
    assert (cfg.client.add_proxy_block, source(cfg, "add_proxy_block")) == (True, why)
    assert (cfg.client.set_music_directory, source(cfg, "set_music_directory")) == (True, why)
    assert (cfg.client.mountpoint, source(cfg, "mountpoint")) == (
        "/var/lib/mpd/MDrive", "guessed: pistop's place for the share (/etc/mpd.conf has no database block)")


def test_explicit_mpd_settings_win(tmp_path):
    cfg = guessed(make_root(tmp_path), add_proxy_block=False, set_music_directory=False, mountpoint="/srv/share")
    assert (cfg.client.add_proxy_block, cfg.client.set_music_directory, cfg.client.mountpoint) == (
        False, False, "/srv/share")
    assert cfg.client.autofs_key == "/srv/share"  # the direct map's key follows the mount point


def test_another_database_block_is_a_config_error_naming_file_line_and_fix(tmp_path):
    root = make_root(tmp_path, mpd_conf=DEBIAN_MPD_CONF + 'database {\n    plugin "simple"\n}\n')
    with pytest.raises(ConfigError) as e:
        guessed(root)
    assert str(e.value) == (
        "/etc/mpd.conf line 21 has a database block with the plugin 'simple' and none with the proxy plugin: "
        "this board would play its own database, not the server's; fix: remove that block there (the client "
        "then adds a proxy block), or set add_proxy_block = false in [client] and add the proxy block yourself")
    cfg = guessed(root, add_proxy_block=False)  # the owner's choice: left alone, as before
    assert source(cfg, "set_music_directory") == "default"


def test_an_unreadable_or_broken_mpd_conf_guesses_nothing_from_it(tmp_path):
    root = make_root(tmp_path, mpd_conf='database {\n    plugin "proxy"\n')
    cfg = guessed(root, mount_mode="direct")
    assert source(cfg, "add_proxy_block") == "default"
    assert fresh.mpd_conf_state(cfg, fresh.look(cfg, str(root)))[0] == "unknown"


# ---------------------------------------------------------------- autofs files


def test_pistops_autofs_files_as_a_direct_map_keyed_by_the_mount_point(tmp_path):
    cfg = derive.client(guessed(make_root(tmp_path)))
    assert (cfg.client.autofs_master, cfg.client.autofs_map, cfg.client.autofs_key, cfg.client.mountpoint) == (
        "/etc/auto.master.d/mpd.autofs", "/etc/autofs.mounts", "/var/lib/mpd/MDrive", "/var/lib/mpd/MDrive")
    assert source(cfg, "autofs_map") == "guessed: pistop's autofs files, created at start " \
                                        "(/var/lib/pistop-mdns/created.list)"
    assert fresh.MASTER_TEXT.splitlines()[-1] == "/- /etc/autofs.mounts --timeout=60"


def test_derive_reads_a_direct_map_back_as_its_key():
    assert derive.DIRECT_MAP == "/-"


def test_derive_takes_the_mount_point_of_a_direct_map_from_its_key(tmp_path, monkeypatch):
    d = tmp_path / "auto.master.d"
    d.mkdir()
    (d / "mpd.autofs").write_text(f"/- {tmp_path}/autofs.mounts --timeout=60\n")
    (tmp_path / "autofs.mounts").write_text("/var/lib/mpd/MDrive -fstype=nfs,vers=4 pi4:/srv/music\n")
    monkeypatch.setattr(derive, "AUTO_MASTER_D", str(d))
    cfg = derive.client(load())
    assert (cfg.client.autofs_key, cfg.client.mountpoint) == ("/var/lib/mpd/MDrive", "/var/lib/mpd/MDrive")


@pytest.mark.parametrize("path, what", [
    ("etc/autofs.mounts", "is named by no /etc/auto.master.d/*.autofs"),
    ("etc/auto.master.d/mpd.autofs", "names no autofs map"),
])
def test_a_file_in_the_way_is_never_written_over(tmp_path, path, what):
    root = make_root(tmp_path)
    (root / path).write_text("# the owner's\n")
    with pytest.raises(ConfigError) as e:
        guessed(root)
    assert str(e.value).startswith(f"/{path} exists and {what}, so pistop-mdns does not write over it; fix: ")


def test_an_autofs_key_that_is_not_the_mount_point_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"\[client\] autofs_key: 'MDrive': the direct map pistop-mdns writes is "
                                          r"keyed by the mount point, /var/lib/mpd/MDrive; fix: remove autofs_key"):
        guessed(make_root(tmp_path), autofs_key="MDrive")


# ---------------------------------------------------------------- what is needed, recorded, created


def test_a_fresh_autofs_board_needs_exactly_these(tmp_path):
    root = make_root(tmp_path)
    cfg = derive.client(guessed(root))
    assert fresh.needs(cfg, fresh.look(cfg, str(root))) == (
        fresh.Entry("created", "/etc/auto.master.d/mpd.autofs"),
        fresh.Entry("created", "/etc/autofs.mounts"),
        fresh.Entry("created", "/etc/autofs.mounts.bak"),
        fresh.Entry("directory", "/var/lib/mpd/MDrive"),
        fresh.Entry("changed", "/etc/mpd.conf", "/var/lib/pistop-mdns/original/etc/mpd.conf"),
        fresh.Entry("created", "/etc/mpd.conf.bak"),
    )


def test_direct_and_mpd_boards_need_less(tmp_path):
    root = make_root(tmp_path, programs=("/usr/sbin/mount.nfs4",))
    cfg = derive.client(guessed(root))
    assert [(e.kind, e.path) for e in fresh.needs(cfg, fresh.look(cfg, str(root)))] == [
        ("directory", "/var/lib/mpd/MDrive"), ("changed", "/etc/mpd.conf"), ("created", "/etc/mpd.conf.bak")]
    root = make_root(tmp_path / "mpd", programs=())
    cfg = derive.client(guessed(root))
    assert cfg.client.mountpoint == ""
    assert [(e.kind, e.path) for e in fresh.needs(cfg, fresh.look(cfg, str(root)))] == [
        ("changed", "/etc/mpd.conf"), ("created", "/etc/mpd.conf.bak")]


def test_the_record_has_this_exact_format_and_reads_back(tmp_path):
    entries = (fresh.Entry("directory", "/var/lib/mpd/MDrive"), fresh.Entry("created", "/etc/autofs.mounts"),
               fresh.Entry("changed", "/etc/mpd.conf", "/var/lib/pistop-mdns/original/etc/mpd.conf"))
    text = fresh.record_text(entries)
    assert text.endswith("\ndirectory\t/var/lib/mpd/MDrive\ncreated\t/etc/autofs.mounts\n"
                         "changed\t/etc/mpd.conf\t/var/lib/pistop-mdns/original/etc/mpd.conf\n")
    assert all(line.startswith("# ") for line in fresh.RECORD_HEADER.splitlines())
    assert fresh.parse_record(text) == entries


def test_a_line_that_is_no_entry_is_skipped_with_a_warning(caplog):
    text = "created\t/etc/a\nremoved\t/etc/b\ncreated\trelative\nchanged\t/etc/c\n"
    assert fresh.parse_record(text, "/r") == (fresh.Entry("created", "/etc/a"),)
    assert "/r line 2: not an entry ('removed\\t/etc/b'); it is left out" in caplog.text


def set_up_board(tmp_path, **client):
    root = make_root(tmp_path)
    before = listing(root)
    cfg = derive.client(guessed(root, **client))
    made = fresh.set_up(cfg, fresh.look(cfg, str(root)), str(root))
    return root, before, cfg, made


def test_set_up_records_first_then_creates_inert_files(tmp_path):
    root, before, cfg, made = set_up_board(tmp_path)
    assert (root / "var/lib/pistop-mdns/created.list").read_text() == fresh.record_text(made)
    assert (root / "etc/auto.master.d/mpd.autofs").read_text() == fresh.MASTER_TEXT
    assert (root / "etc/autofs.mounts").read_text() == fresh.MAP_TEXT
    assert files.autofs_map_entry(fresh.MAP_TEXT, "/var/lib/mpd/MDrive") is None  # no entry until a server
    assert (root / "var/lib/mpd/MDrive").is_dir()
    copy = root / "var/lib/pistop-mdns/original/etc/mpd.conf"
    assert copy.read_text() == DEBIAN_MPD_CONF and (copy.stat().st_mode & 0o777) == 0o640
    assert (root / "etc/mpd.conf").read_text() == DEBIAN_MPD_CONF  # changed only at the bring-up
    assert not (root / "etc/mpd.conf.bak").exists()
    # a second start: nothing new, the record is not rewritten
    again = derive.client(guessed(root))
    assert fresh.needs(again, fresh.look(again, str(root))) == ()
    assert source(again, "add_proxy_block") == ("guessed: pistop-mdns added the proxy block to /etc/mpd.conf "
                                                "(/var/lib/pistop-mdns/created.list)")
    assert again.client.mount_mode == "autofs" and source(again, "mount_mode").startswith("guessed: ")


def test_dry_run_set_up_writes_nothing(tmp_path):
    root = make_root(tmp_path)
    before = listing(root)
    cfg = derive.client(guessed(root))
    assert fresh.set_up(cfg, fresh.look(cfg, str(root)), str(root), dry_run=True)
    assert listing(root) == before


def bring_up(root: Path, cfg: config.Config, address: str = "198.18.0.11", music: str = "Music") -> None:
    """What the bring-up's steps write (machine.py: PointAutofs, SetMpdConf), with the same functions."""
    amap = root / "etc/autofs.mounts"
    files.atomic_write(amap, files.rewrite_autofs_map(amap.read_text(), cfg.client.autofs_key,
                                                      location=f"{address}:/srv/music",
                                                      options=cfg.client.autofs_options))
    conf = root / "etc/mpd.conf"
    files.atomic_write(conf, files.rewrite_mpd_conf(conf.read_text(), proxy_host=address, proxy_port=6600,
                                                    music_directory=f"{cfg.client.mountpoint}/{music}",
                                                    add_proxy_block=True, drop_db_file=True))


def test_after_a_bring_up_the_board_reads_like_this(tmp_path):
    root, _, cfg, _ = set_up_board(tmp_path)
    bring_up(root, cfg)
    assert (root / "etc/autofs.mounts").read_text() == fresh.MAP_TEXT + (
        "/var/lib/mpd/MDrive -fstype=nfs,vers=4,soft,timeo=5,retry=1 198.18.0.11:/srv/music\n")
    assert (root / "etc/mpd.conf").read_text() == DEBIAN_MPD_CONF.replace(
        '"/var/lib/mpd/music"', '"/var/lib/mpd/MDrive/Music"').replace(
        'db_file\t\t\t"/var/lib/mpd/tag_cache"', '#db_file\t\t\t"/var/lib/mpd/tag_cache"') + (
        'database {\n    plugin "proxy"\n    host "198.18.0.11"\n    port "6600"\n}\n')
    assert (root / "etc/mpd.conf.bak").read_text() == DEBIAN_MPD_CONF


def test_undo_leaves_the_board_exactly_as_it_was(tmp_path):
    root, before, cfg, _ = set_up_board(tmp_path)
    bring_up(root, cfg)
    bring_up(root, cfg, address="198.18.0.12")  # a second server: .bak files now hold our own versions
    calls = []
    done = fresh.undo(str(root), restart_mpd=lambda: calls.append("mpd"), reload_autofs=lambda: calls.append("autofs"),
                      unmount=lambda target: calls.append(f"unmount {target}"))
    assert listing(root) == before
    assert done.restored == ["/etc/mpd.conf"] and done.left == []
    assert calls == ["mpd", "autofs", f"unmount {root}/var/lib/mpd/MDrive"]
    assert fresh.undo(str(root)) is None  # the record went with it


def test_undo_takes_back_only_what_was_recorded(tmp_path):
    root, before, cfg, _ = set_up_board(tmp_path)
    (root / "etc/hosts").write_text("192.168.2.101 MusicPI\n")  # the owner's, made later
    (root / "var/lib/mpd/MDrive/kept").write_text("")  # something in the mount point: it stays
    fresh.undo(str(root))
    assert (root / "etc/hosts").exists() and (root / "var/lib/mpd/MDrive/kept").exists()
    assert not (root / "etc/autofs.mounts").exists()


def test_a_crash_between_record_and_files_is_undone_too(tmp_path, monkeypatch):
    root = make_root(tmp_path)
    before = listing(root)
    cfg = derive.client(guessed(root))
    real = files.atomic_write

    def crash(path, text, **kw):
        if str(path).endswith("autofs.mounts"):
            raise OSError(28, "No space left on device", str(path))
        return real(path, text, **kw)

    monkeypatch.setattr(files, "atomic_write", crash)
    with pytest.raises(OSError):
        fresh.set_up(cfg, fresh.look(cfg, str(root)), str(root))
    monkeypatch.undo()
    assert (root / "etc/auto.master.d/mpd.autofs").exists()
    fresh.undo(str(root))
    assert listing(root) == before


def test_undo_dry_run_says_what_and_changes_nothing(tmp_path):
    root, _, cfg, _ = set_up_board(tmp_path)
    bring_up(root, cfg)
    now = listing(root)
    said: list[str] = []
    fresh.undo(str(root), dry_run=True, echo=said.append)
    assert listing(root) == now
    assert f"would restore {root}/etc/mpd.conf from {root}/var/lib/pistop-mdns/original/etc/mpd.conf" in said
    assert f"would remove {root}/etc/auto.master.d/mpd.autofs" in said


def postrm_undo(root: Path) -> subprocess.CompletedProcess:
    """The postrm's undo function alone, under `root` (the rest of the script is not run)."""
    text = POSTRM.read_text()
    function = text[text.index("undo_board_setup() {"):text.index("\n}\n", text.index("undo_board_setup() {")) + 3]
    return subprocess.run(["sh", "-ec", function + 'undo_board_setup "$1"', "sh", str(root)],
                          capture_output=True, text=True, timeout=60)


def test_the_packages_postrm_takes_it_back_exactly_as_install_service_does(tmp_path):
    results = []
    for name in ("python", "postrm"):
        root, before, cfg, _ = set_up_board(tmp_path / name)
        bring_up(root, cfg)
        (root / "etc/mpd.conf").chmod(0o600)  # even the mode comes back
        if name == "python":
            fresh.undo(str(root))
        else:
            proc = postrm_undo(root)
            assert proc.returncode == 0, proc.stderr
            # purge then removes the whole state directory itself
            assert (root / "var/lib/pistop-mdns/created.list").exists()
            subprocess.run(["rm", "-rf", str(root / "var/lib/pistop-mdns")], check=True)
        results.append(listing(root))
        assert listing(root) == before, name
    assert results[0] == results[1]


def test_prepare_logs_the_mode_and_what_was_set_up(tmp_path, caplog):
    root = make_root(tmp_path)
    cfg = derive.client(guessed(root))
    with caplog.at_level(logging.INFO):
        assert fresh.prepare(cfg, dry_run=False, root=str(root)) == 0
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ("kitchen: mount_mode autofs (guessed: autofs and nfs-common are installed "
                        "(/usr/sbin/automount, /usr/sbin/mount.nfs4))")
    assert lines[1] == (
        "kitchen: set up for autofs: created /etc/auto.master.d/mpd.autofs, /etc/autofs.mounts, "
        "/var/lib/mpd/MDrive; /etc/mpd.conf gets a proxy block and music_directory in the share when a server "
        "appears (the file as it was is kept as /var/lib/pistop-mdns/original/etc/mpd.conf); recorded in "
        "/var/lib/pistop-mdns/created.list, and `pistop-mdns install-service client --remove` takes it back")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert fresh.prepare(cfg, dry_run=False, root=str(root)) == 0
    assert [r.getMessage() for r in caplog.records] == [lines[0]]  # a restart sets up nothing new


def test_prepare_without_permission_is_status_1_naming_the_file(tmp_path, caplog, monkeypatch):
    root = make_root(tmp_path)
    cfg = derive.client(guessed(root))

    def denied(*a, **kw):
        raise PermissionError(13, "Permission denied", "/var/lib/pistop-mdns")

    monkeypatch.setattr(fresh.os, "makedirs", denied)
    assert fresh.prepare(cfg, dry_run=False, root=str(root)) == 1
    assert "kitchen: cannot set up this board: /var/lib/pistop-mdns: Permission denied; fix: run the client as " \
           "root" in caplog.text


# ---------------------------------------------------------------- install-service


class Recording:
    def __init__(self):
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv, *, timeout=None, input=None, env=None) -> Result:
        self.calls.append(tuple(argv))
        return Result(tuple(argv), 0)


def test_remove_takes_back_the_set_up_and_restarts_what_runs(tmp_path, monkeypatch):
    root, before, cfg, _ = set_up_board(tmp_path)
    bring_up(root, cfg)
    target = f"{root}/var/lib/mpd/MDrive"
    # automount does not let go in time: the share, then its trigger, are unmounted lazily
    mounted = [["autofs", "nfs4"], ["autofs", "nfs4"], ["autofs"], []]
    monkeypatch.setattr(svc, "mounts_at", lambda path: mounted.pop(0) if path == target else [])
    monkeypatch.setattr(svc, "AUTOFS_RELEASE_WAIT", 0.0)
    runner = Recording()
    installer = svc.Installer(runner, root=str(root), live=True, echo=lambda line: None)
    managed = config.load("/dev/null", None, {("general", "service_manager"): "systemd"})
    assert svc.undo_board_setup(managed, installer) == 0
    assert listing(root) == before and mounted == []
    assert runner.calls == [
        ("systemctl", "is-active", "--quiet", "mpd.service"), ("systemctl", "restart", "mpd.service"),
        ("systemctl", "is-active", "--quiet", "autofs.service"), ("systemctl", "reload", "autofs.service"),
        ("umount", "-fl", "--", target), ("umount", "-fl", "--", target)]


def test_mounts_at_reads_mountinfo_autofs_triggers_included(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text("22 1 0:21 / / rw - ext4 /dev/sda1 rw\n"
                    "241 231 0:169 / /var/lib/mpd/MDrive rw - autofs /etc/autofs.mounts rw,direct\n"
                    "250 241 0:170 / /var/lib/mpd/MDrive rw - nfs4 198.18.0.11:/srv/music rw\n")
    assert svc.mounts_at("/var/lib/mpd/MDrive", str(info)) == ["autofs", "nfs4"]
    assert svc.mounts_at("/var/lib/mpd", str(info)) == []


def test_remove_in_another_root_touches_files_only(tmp_path):
    root, before, cfg, _ = set_up_board(tmp_path)
    runner = Recording()
    installer = svc.Installer(runner, root=str(root), live=False, echo=lambda line: None)
    assert svc.undo_board_setup(load(), installer) == 0
    assert listing(root) == before and runner.calls == []


def test_install_service_prints_the_config_error_and_installs_nothing(tmp_path, caplog):
    conf = tmp_path / "mpd.conf"
    conf.write_text('database {\n    plugin "simple"\n}\n')
    cfg = config.load("/dev/null", None, {("client", "mpd_conf"): str(conf), ("general", "hostname"): "kitchen"})
    printed: list[str] = []
    status = svc.run(cfg, "client", init="systemd", remove=False, dry_run=True, root="/", config_path=None,
                     envdir=None, echo=printed.append)
    assert status == 2 and printed == []
    assert (f"{conf} line 1 has a database block with the plugin 'simple' and none with the proxy plugin" in caplog.text)
    assert "nothing was installed (the client would stop at once with this error)" in caplog.text


def test_the_server_and_client_units_stop_on_a_configuration_error():
    for role in ("server", "client"):
        text = svc.systemd_files(role, [svc.PROGRAM])[0].text
        assert "\nRestart=on-failure\n" in text and "\nRestartPreventExitStatus=2\n" in text, role


# ---------------------------------------------------------------- the pieces the bring-up uses


def test_db_file_is_commented_out_only_when_the_proxy_block_is_added():
    text = 'db_file "/var/lib/mpd/tag_cache"\n  db_file "/x"  # twice\n'
    added = files.rewrite_mpd_conf(text, proxy_host="h", proxy_port=6600, add_proxy_block=True, drop_db_file=True)
    assert added == ('#db_file "/var/lib/mpd/tag_cache"\n  #db_file "/x"  # twice\n'
                     'database {\n    plugin "proxy"\n    host "h"\n    port "6600"\n}\n')
    assert files.rewrite_mpd_conf(text, proxy_host="h", add_proxy_block=True).startswith(text)
    with_block = text + 'database {\n    plugin "proxy"\n}\n'
    assert files.rewrite_mpd_conf(with_block, proxy_host="h", add_proxy_block=True, drop_db_file=True) == (
        with_block.replace('plugin "proxy"\n', 'plugin "proxy"\n    host "h"\n'))


def test_atomic_copy_keeps_bytes_and_mode_and_says_when_nothing_changed(tmp_path):
    source, target = tmp_path / "a", tmp_path / "b"
    source.write_bytes(b"x\r\ny")
    source.chmod(0o640)
    assert files.atomic_copy(source, target)
    assert target.read_bytes() == b"x\r\ny" and (target.stat().st_mode & 0o777) == 0o640
    assert not files.atomic_copy(source, target)


def test_the_bring_up_points_music_directory_into_the_share_when_asked(tmp_path):
    from pistop_mdns.model import SetMpdConf
    from tests.unit.board import ad, bring_up_plan, make_config

    for asked, expected in ((True, "/mnt/music/Music"), (False, "")):
        _, plan = bring_up_plan(make_config(tmp_path, set_music_directory=asked), ad(music="Music"))
        assert next(a for a in plan.actions if isinstance(a, SetMpdConf)).music_directory == expected


def test_the_machine_adds_the_block_and_comments_db_file_out(tmp_path):
    from pistop_mdns.machine import MachineApplier
    from pistop_mdns.model import BRING_UP, Plan, SetMpdConf
    from tests.unit.board import Board, make_config

    (tmp_path / "mpd.conf").write_text(DEBIAN_MPD_CONF)
    cfg = make_config(tmp_path, add_proxy_block=True)
    applier = MachineApplier(cfg, Board(tmp_path / "mountinfo"))
    step = SetMpdConf("198.18.0.11", 6600, "/mnt/music/Music")
    assert applier.run_plan(Plan(1, BRING_UP, None, (step,), "t"), lambda state: True).ok
    text = (tmp_path / "mpd.conf").read_text()
    assert '\n#db_file\t\t\t"/var/lib/mpd/tag_cache"\n' in text and 'music_directory\t\t"/mnt/music/Music"' in text
    assert text.endswith('database {\n    plugin "proxy"\n    host "198.18.0.11"\n    port "6600"\n}\n')
    assert (tmp_path / "mpd.conf.bak").read_text() == DEBIAN_MPD_CONF


# ---------------------------------------------------------------- what users see


def pm(*args: str) -> subprocess.CompletedProcess:
    from tests.helpers import ENV, pm_argv

    return subprocess.run(pm_argv(*args), env=ENV, capture_output=True, text=True, timeout=60)


def test_config_show_says_what_was_guessed_and_from_what(tmp_path):
    conf = tmp_path / "mpd.conf"
    conf.write_text(DEBIAN_MPD_CONF)
    proc = pm("--config", "/dev/null", "config", "show", "--role", "client", "--mpd-conf", str(conf),
              "--mount-mode", "direct")
    assert proc.returncode == 0, proc.stderr
    assert 'mount_mode = "direct"  # option --mount-mode\n' in proc.stdout
    assert f"add_proxy_block = true  # guessed: {conf} has no database block\n" in proc.stdout
    assert f"set_music_directory = true  # guessed: {conf} has no database block\n" in proc.stdout
    assert (f'mountpoint = "/var/lib/mpd/MDrive"  # guessed: pistop\'s place for the share ({conf} has no '
            f'database block)\n') in proc.stdout


def test_config_check_of_a_client_that_cannot_start_exits_2_with_the_fix(tmp_path):
    conf = tmp_path / "mpd.conf"
    conf.write_text('database {\n    plugin "simple"\n}\n')
    toml = tmp_path / "pistop-mdns.toml"
    toml.write_text(f'[client]\nmpd_conf = "{conf}"\n')
    proc = pm("--config", str(toml), "config", "check", "--role", "client")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"pistop-mdns: error: {conf} line 1 has a database block with the plugin "
                                  f"'simple'") and "; fix: " in proc.stderr


def test_readme_on_the_pis_shows_the_two_commands_of_a_new_board_first():
    section = (REPO / "README.md").read_text().split("\n## On the Pis\n", 1)[1].split("\n## ", 1)[0]
    first_block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    assert first_block == ("sudo apt install ./pistop-mdns_0.1.0-1_all.deb\n"
                           "sudo pistop-mdns install-service client\n")


def test_a_dry_run_client_says_what_it_would_set_up(tmp_path, caplog):
    root = make_root(tmp_path)
    before = listing(root)
    cfg = derive.client(guessed(root))
    with caplog.at_level(logging.INFO):
        assert fresh.prepare(cfg, dry_run=True, root=str(root)) == 0
    assert listing(root) == before
    assert caplog.records[-1].getMessage().startswith(
        "kitchen: would set up for autofs (dry run): creates /etc/auto.master.d/mpd.autofs, /etc/autofs.mounts, ")


def test_what_the_record_lists_and_is_gone_is_created_again(tmp_path):
    root, _, cfg, _ = set_up_board(tmp_path)
    (root / "etc/auto.master.d/mpd.autofs").unlink()
    again = derive.client(guessed(root))
    assert fresh.set_up(again, fresh.look(again, str(root)), str(root)) == (
        fresh.Entry("created", "/etc/auto.master.d/mpd.autofs"),)
    assert (root / "etc/auto.master.d/mpd.autofs").read_text() == fresh.MASTER_TEXT
    assert (root / "var/lib/pistop-mdns/created.list").read_text().count("mpd.autofs") == 1
