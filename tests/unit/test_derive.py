"""Zero-config: what the server and client find in the host's own files."""

from __future__ import annotations

import pytest

from pistop_mdns import config, derive
from pistop_mdns.actions import server
from pistop_mdns.config import ConfigError


def cfg_with(tmp_path, **flags):
    return config.load("/dev/null", None, {tuple(k.split("__")): v for k, v in flags.items()})


def server_files(tmp_path, exports, mpd_conf):
    (tmp_path / "exports").write_text(exports)
    (tmp_path / "mpd.conf").write_text(mpd_conf)
    return {"server__exports_file": str(tmp_path / "exports"), "server__mpd_conf": str(tmp_path / "mpd.conf"),
            "general__hostname": "musicpi"}


def test_server_derives_export_music_and_port_like_pistops_pi(tmp_path):
    files = server_files(
        tmp_path,
        "/home/pi/MDrive 192.168.2.0/24(rw,async,no_root_squash,subtree_check,anonuid=1000,anongid=1000)\n",
        'music_directory "/home/pi/MDrive/Music"\nport "6601"\n',
    )
    cfg = derive.server(cfg_with(tmp_path, **files))
    assert (cfg.server.instance, cfg.server.export, cfg.server.music, cfg.server.mpd_port) == \
        ("musicpi", "/home/pi/MDrive", "Music", 6601)
    assert cfg.sources[("server", "export")] == f"derived from {tmp_path}/exports"
    assert cfg.sources[("server", "mpd_port")] == f"derived from {tmp_path}/mpd.conf"


def test_server_picks_the_export_holding_the_music_and_nfsv4_root(tmp_path):
    files = server_files(
        tmp_path,
        "/srv/nfs4 *(rw,fsid=0,no_subtree_check)\n/srv/nfs4/backup *(rw)\n/srv/nfs4/music *(ro)\n",
        'music_directory "/srv/nfs4/music/Albums"\n',
    )
    cfg = derive.server(cfg_with(tmp_path, **files))
    assert (cfg.server.export, cfg.server.music, cfg.server.mpd_port) == ("/music", "Albums", 6600)
    cfg = derive.server(cfg_with(tmp_path, server__nfsvers="3", **files))
    assert cfg.server.export == "/srv/nfs4/music"


def test_server_without_exports_says_which_key_to_set(tmp_path):
    files = server_files(tmp_path, "# nothing\n", "")
    with pytest.raises(ConfigError, match=r'\[server\] export: not set, and .*exports nothing; fix: set export'):
        derive.server(cfg_with(tmp_path, **files))


def test_configured_values_win_over_derived(tmp_path):
    files = server_files(tmp_path, "/srv/music *(ro)\n", 'port "6601"\n')
    cfg = derive.server(cfg_with(tmp_path, server__export="/other", server__mpd_port="7000", **files))
    assert (cfg.server.export, cfg.server.mpd_port, cfg.server.music) == ("/other", 7000, "")


def test_client_mountpoint_from_autofs_maps_as_pistopstart(tmp_path, monkeypatch):
    d = tmp_path / "auto.master.d"
    d.mkdir()
    (d / "mpd.autofs").write_text(f"/var/lib/mpd {tmp_path}/autofs.mounts timeout=60\n")
    (tmp_path / "autofs.mounts").write_text("MDrive -fstype=nfs,vers=4,soft,timeo=5,retry=1 pi4:/home/pi/MDrive\n")
    monkeypatch.setattr(derive, "AUTO_MASTER_D", str(d))
    cfg = derive.client(cfg_with(tmp_path))
    assert cfg.client.autofs_map == f"{tmp_path}/autofs.mounts"
    assert cfg.client.autofs_key == "MDrive"
    assert cfg.client.mountpoint == "/var/lib/mpd/MDrive"


def test_client_direct_mountpoint_from_music_directory(tmp_path):
    (tmp_path / "mpd.conf").write_text('music_directory "/var/lib/mpd/MDrive/Music"\n')
    cfg = derive.client(cfg_with(tmp_path, client__mount_mode="direct", client__mpd_conf=str(tmp_path / "mpd.conf")))
    assert cfg.client.mountpoint == "/var/lib/mpd/MDrive"


def test_client_without_autofs_map_says_what_to_create(tmp_path, monkeypatch):
    monkeypatch.setattr(derive, "AUTO_MASTER_D", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match=r"\[client\] autofs_map: not set.*fix: create .*mpd.autofs"):
        derive.client(cfg_with(tmp_path))


def test_client_template_typo_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"\[client\] mount_source: '\{adress\}:\{export\}' is not a valid"):
        derive.client(cfg_with(tmp_path, client__mount_mode="mpd", client__mount_source="{adress}:{export}"))


# ---------------------------------------------------------------- why the server stops


JOBS_POWEROFF = "1 poweroff.target start waiting\n2 pistop-mdns-server.service stop running\n"
JOBS_REBOOT = "1 reboot.target start waiting\n2 pistop-mdns-server.service stop running\n"
JOBS_RESTART = "7 pistop-mdns-server.service restart running\n"


@pytest.mark.parametrize("jobs, system, expected", [
    (JOBS_POWEROFF, "stopping", "poweroff"),
    (JOBS_REBOOT, "stopping", "stopping"),
    (JOBS_RESTART, "running", "restart"),
    ("", "running", "stopping"),
    ("", "stopping", "poweroff"),
])
def test_stop_reason_from_the_service_manager(jobs, system, expected):
    unit = "pistop-mdns-server.service"
    assert server.stop_reason_from(server.parse_jobs(jobs), system, unit) == expected


def test_parse_jobs_ignores_noise():
    assert server.parse_jobs("No jobs running.\n3 a.service start waiting\n") == [("a.service", "start")]
