"""Where multicast is filtered, and where there is more than one server (issue 13 items 4
and 5): real servers and boards on the simulated LAN."""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers import ENV, need, pm_argv, wait_for
from tests.lan import peers

pytestmark = pytest.mark.lan


def drop_mdns(host) -> None:
    """nftables in the host's namespace: no mDNS in or out, as behind a Wi-Fi that filters multicast."""
    need("nft", package="nftables")
    host.run(["nft", "add", "table", "inet", "nomdns"], check=True)
    for chain, hook in (("in", "input"), ("out", "output")):
        host.run(["nft", "add", "chain", "inet", "nomdns", chain, f"{{ type filter hook {hook} priority 0; }}"],
                 check=True)
        host.run(["nft", "add", "rule", "inet", "nomdns", chain, "udp", "dport", "5353", "drop"], check=True)
        host.run(["nft", "add", "rule", "inet", "nomdns", chain, "udp", "sport", "5353", "drop"], check=True)


def status(host, tmp_path) -> dict:
    proc = host.run(pm_argv("status", "--json", "--state-dir", str(tmp_path / f"state-{host.name}")), env=ENV)
    return json.loads(proc.stdout)["client"] or {}


def test_a_static_server_works_with_mdns_dropped_as_with_mdns(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    key = peers.make_key(tmp_path)
    drop_mdns(lan["kitchen"])
    cl = peers.client(lan["kitchen"], tmp_path, "--key-file", key, "--static-servers", lan["musicpi"].address)
    srv = peers.server(lan["musicpi"], tmp_path, "--key-file", key)
    cl.wait(r"kitchen: server musicpi \(198\.18\.0\.11\) appeared -> mount 198\.18\.0\.11:/srv/music", 30)
    cl.wait("kitchen: up with musicpi", 15)
    srv.wait("client kitchen is up", 10)
    # no mDNS reaches the board: browse there finds nothing
    assert lan["kitchen"].run(pm_argv("browse", "--timeout", "2"), env=ENV, timeout=30).returncode == 1
    # the server stops: the board tears down at once, as with mDNS
    assert peers.stop(srv) == 0
    cl.wait(r"kitchen: server musicpi is stopping -> stop mpd, unmount /mnt/music", 20)
    mark = cl.mark()
    srv = peers.server(lan["musicpi"], tmp_path, "--key-file", key)
    cl.wait(r"server musicpi \(198\.18\.0\.11\) appeared ->", 60, start=mark)
    cl.wait("kitchen: up with musicpi", 20, start=mark)
    # a pulled cable: silent for dead_time, then back up when the cable returns
    mark = cl.mark()
    lan["musicpi"].cable(False)
    cl.wait(r"kitchen: server musicpi silent for 10 s \(crashed or unplugged\) -> ask mpd to stop", 30, start=mark)
    lan["musicpi"].cable(True)
    cl.wait("kitchen: up with musicpi", 90, start=mark)
    assert status(lan["kitchen"], tmp_path)["server"]["address"] == "198.18.0.11"
    assert cl.count("warning: ignoring") == 0


def test_a_server_seen_over_mdns_and_directly_is_one_server(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    cl = peers.client(lan["kitchen"], tmp_path, "--static-servers", f"{lan['musicpi'].address}:5555")
    srv = peers.server(lan["musicpi"], tmp_path)
    cl.wait("kitchen: up with musicpi", 30)
    time.sleep(3)  # both ways have reported by now
    wait_for(lambda: status(lan["kitchen"], tmp_path).get("servers_seen") == ["musicpi"], 10,
             what="one server in status")
    srv.wait("client kitchen is up", 10)

    def server_clients():
        proc = lan["musicpi"].run(pm_argv("status", "--json", "--state-dir", str(tmp_path / "state-musicpi")),
                                  env=ENV)
        return [c["name"] for c in json.loads(proc.stdout)["server"]["clients"]]

    # one channel in the end: the one found over mDNS is dropped for the direct one
    wait_for(lambda: server_clients() == ["kitchen"], 15, what="one channel from kitchen")
    assert peers.stop(srv) == 0
    cl.wait("server musicpi is stopping -> stop mpd", 20)
    time.sleep(2)
    assert cl.count("appeared ->") == 1 and cl.count("-> stop mpd") == 1


def test_a_board_takes_the_next_server_and_returns_to_the_preferred_one(make_lan, tmp_path):
    lan = make_lan(["musicpi", "attic", "kitchen", "bedroom"])
    pinned = peers.client(lan["kitchen"], tmp_path, "--server", "musicpi,attic")
    anyone = peers.client(lan["bedroom"], tmp_path)
    attic = peers.server(lan["attic"], tmp_path)
    pinned.wait(r"server attic \(198\.18\.0\.12\) appeared -> mount 198\.18\.0\.12:/srv/music", 30)
    anyone.wait(r"server attic \(198\.18\.0\.12\) appeared ->", 30)
    musicpi = peers.server(lan["musicpi"], tmp_path)
    # the preferred server came: the pinned board switches, the other stays with the first it saw
    pinned.wait(r"switching from attic to musicpi \(preferred\) -> stop mpd", 30)
    pinned.wait(r"server musicpi \(198\.18\.0\.11\) appeared -> mount 198\.18\.0\.11:/srv/music", 20)
    anyone.wait(r"server musicpi \(198\.18\.0\.11\) appeared; staying with attic", 30)
    # the preferred one leaves: the pinned board takes the next one that qualifies
    mark = pinned.mark()
    assert peers.stop(musicpi) == 0
    pinned.wait(r"server musicpi is stopping -> stop mpd", 20, start=mark)
    pinned.wait(r"server attic \(198\.18\.0\.12\) appeared -> mount 198\.18\.0\.12", 30, start=mark)
    # and the first-seen board, when its server leaves, takes the one that is left
    mark = anyone.mark()
    musicpi = peers.server(lan["musicpi"], tmp_path)
    pinned.wait(r"switching from attic to musicpi \(preferred\)", 60, start=mark)
    assert peers.stop(attic) == 0
    anyone.wait(r"server attic is stopping -> stop mpd", 20, start=mark)
    anyone.wait(r"server musicpi \(198\.18\.0\.11\) appeared -> mount", 30, start=mark)
