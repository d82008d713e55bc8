"""The example files in contrib/ (pistop's layout: the server's /etc/exports and mpd.conf,
the board's mpd.conf, auto.master.d file and map) are accepted by the parsers that read
them on a real host, and give what pistop's README describes."""

from __future__ import annotations

from pathlib import Path

from pistop_mdns import config, derive, files

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
SERVER = CONTRIB / "server" / "etc"
CLIENT = CONTRIB / "client" / "etc"


def load(**flags) -> config.Config:
    return config.load("/dev/null", None, {tuple(k.split("__")): v for k, v in flags.items()})


def test_server_exports_and_mpd_conf_give_the_advertised_export_music_and_port():
    cfg = derive.server(load(general__hostname="musicpi", server__exports_file=str(SERVER / "exports"),
                             server__mpd_conf=str(SERVER / "mpd.conf")))
    assert (cfg.server.export, cfg.server.music, cfg.server.mpd_port) == ("/MDrive", "Music", 6600)
    assert cfg.sources[("server", "export")] == f"derived from {SERVER / 'exports'}"
    assert files.exports_paths((SERVER / "exports").read_text()) == ["/MDrive"]
    text = (SERVER / "mpd.conf").read_text()
    assert files.mpd_proxy(text) is None  # the server keeps the real database
    assert files.mpd_conf_value(text, "music_directory") == "/MDrive/Music"


def test_client_autofs_files_give_the_mount_point_and_the_entry_the_client_rewrites():
    master, mapfile = CLIENT / "auto.master.d" / "mpd.autofs", CLIENT / "autofs.mounts"
    assert files.autofs_master_entries(master.read_text()) == [("/var/lib/mpd", "/etc/autofs.mounts")]
    cfg = derive.client(load(general__hostname="kitchen", client__autofs_master=str(master),
                             client__autofs_map=str(mapfile), client__mpd_conf=str(CLIENT / "mpd.conf")))
    assert (cfg.client.mountpoint, cfg.client.autofs_key) == ("/var/lib/mpd/MDrive", "MDrive")
    text = mapfile.read_text()
    assert files.autofs_map_entry(text, "MDrive") == ("fstype=nfs,vers=4,soft,timeo=5,retry=1", "musicpi:/MDrive")
    rewritten = files.rewrite_autofs_map(text, "MDrive", location="192.168.1.10:/MDrive",
                                         options=cfg.client.autofs_options)
    assert files.autofs_map_entry(rewritten, "MDrive") == ("fstype=nfs,vers=4,soft,timeo=5,retry=1",
                                                           "192.168.1.10:/MDrive")
    assert rewritten.splitlines()[:-1] == text.splitlines()[:-1]  # the comments stay


def test_client_mpd_conf_proxy_block_is_pointed_at_the_server_and_nothing_else_changes():
    text = (CLIENT / "mpd.conf").read_text()
    assert files.mpd_proxy(text) == ("MusicPI", "6600")
    rewritten = files.rewrite_mpd_conf(text, proxy_host="192.168.1.10", proxy_port=6600)
    assert files.mpd_proxy(rewritten) == ("192.168.1.10", "6600")
    changed = [(a, b) for a, b in zip(text.splitlines(), rewritten.splitlines()) if a != b]
    assert changed == [('    host            "MusicPI"', '    host            "192.168.1.10"')]
    # Without autofs, the mount point is the parent of music_directory: the same place.
    cfg = derive.client(load(general__hostname="kitchen", client__mount_mode="direct",
                             client__mpd_conf=str(CLIENT / "mpd.conf")))
    assert cfg.client.mountpoint == "/var/lib/mpd/MDrive"
