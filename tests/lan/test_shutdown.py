"""The shutdown cascade on the simulated LAN: the server's helper waits until the boards
are down before it powers off; a board can ask for it only with the shared key."""

from __future__ import annotations

import re
import time

import pytest

from tests.helpers import ENV, pm_argv, wait_for
from tests.lan import peers

pytestmark = pytest.mark.lan


def server_config(tmp_path, key: str = "") -> str:
    path = tmp_path / "server.toml"
    path.write_text(f"""
[general]
state_dir = "{tmp_path}/state-musicpi"
service_manager = "none"
{f'key_file = "{key}"' if key else ""}
[server]
export = "/srv/music"
mpd_port = 6600
[shutdown]
services = []
clients_timeout = 15
command = ["touch", "{tmp_path}/server-powered-off"]
""")
    return str(path)


def test_local_shutdown_waits_until_the_board_is_off_then_syncs_and_powers_off(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    conf = server_config(tmp_path)
    srv = peers.start(lan["musicpi"], "--config", conf, "server")
    cl = peers.client(lan["kitchen"], tmp_path, "--power-off")
    cl.wait("up with musicpi", 30)
    srv.wait("client kitchen is up", 10)
    helper = peers.start(lan["musicpi"], "--config", conf, "shutdown")
    cl.wait(r"server musicpi is powering off -> stop mpd, unmount /mnt/music, sync and power off", 10)
    cl.wait("powering off; the client stops here", 10)
    srv.wait("client kitchen is powering off", 10)
    # The board's client has ended, but its kernel still answers: its power is not off yet.
    assert cl.proc.wait(10) == 0
    time.sleep(3)
    assert not (tmp_path / "server-powered-off").exists(), helper.text()
    lan["kitchen"].link(False)  # now it is
    assert helper.proc.wait(30) == 0, helper.text()
    helper.wait("power off: done", 5)
    srv.wait(r"client kitchen is off: 198\.18\.0\.12 no longer answers", 5)
    steps = helper.text().splitlines()
    assert "musicpi: shutdown: announcing poweroff to the clients, waiting up to 15 s for them" in steps
    assert "musicpi: all 1 client(s) are down: kitchen" in steps
    assert "musicpi: powered off: kitchen" in steps
    assert "musicpi: shutdown: sync: done (sync)" in steps
    assert f"musicpi: shutdown: power off: done (touch {tmp_path}/server-powered-off)" in steps
    order = [i for i, line in enumerate(steps)
             if re.search(r"all 1 client|powered off: kitchen|sync: done|power off: done", line)]
    assert order == sorted(order) and len(order) == 4
    assert (tmp_path / "server-powered-off").exists()


def test_a_board_that_never_goes_off_holds_the_server_only_for_clients_timeout(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    conf = server_config(tmp_path)
    peers.start(lan["musicpi"], "--config", conf, "server")
    cl = peers.client(lan["kitchen"], tmp_path, "--power-off")
    cl.wait("up with musicpi", 30)
    proc = lan["musicpi"].run(pm_argv("--config", conf, "shutdown"), env=ENV, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "musicpi: said they power off but still answer after 15 s: kitchen; going on" in proc.stderr
    assert (tmp_path / "server-powered-off").exists()


def test_a_board_asks_the_server_to_shut_down_with_the_key(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    key = peers.make_key(tmp_path)
    conf = server_config(tmp_path, key)
    peers.start(lan["musicpi"], "--config", conf, "server")
    cl = peers.client(lan["kitchen"], tmp_path, "--key-file", key)
    cl.wait("up with musicpi", 30)
    proc = lan["kitchen"].run(pm_argv("shutdown", "--server", "musicpi", "--key-file", key), env=ENV, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "musicpi (198.18.0.11): shutdown started" in proc.stderr
    wait_for(lambda: (tmp_path / "server-powered-off").exists(), 60, what="the server's power-off command")
    cl.wait(r"server musicpi is powering off -> stop mpd", 10)


def test_remote_shutdown_without_a_key_is_refused_on_both_ends(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    peers.start(lan["musicpi"], "--config", server_config(tmp_path), "server")
    peers.browse_until(lan["kitchen"], "musicpi")
    proc = lan["kitchen"].run(pm_argv("shutdown", "--server", "musicpi", "--key-file", str(tmp_path / "nokey")),
                              env=ENV, timeout=60)
    assert proc.returncode == 2
    assert "no key: a server accepts remote commands only with the shared key" in proc.stderr
    # a board that has a key does not even find an unsigned server
    proc = lan["kitchen"].run(pm_argv("shutdown", "--server", "musicpi", "--key-file", peers.make_key(tmp_path)),
                              env=ENV, timeout=60)
    assert proc.returncode == 1
    assert "no server musicpi found on the LAN (or it does not prove the key)" in proc.stderr
    assert not (tmp_path / "server-powered-off").exists()
