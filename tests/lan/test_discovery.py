"""Discovery with real processes on the simulated LAN (issue 3): server, browse, client
plans, pinning, renaming, address changes, and avahi as an independent mDNS peer."""

from __future__ import annotations

import json

import pytest

from pistop_mdns import __version__
from tests.helpers import ENV, Output, pm_argv, wait_for
from tests.lan import peers

pytestmark = pytest.mark.lan


def test_browse_json_sees_the_server_with_its_txt(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    srv = peers.server(lan["musicpi"], tmp_path)
    found = peers.browse_until(lan["kitchen"], "musicpi")
    assert found["name"] == "musicpi._pistop._tcp.local."
    assert found["host"] == "musicpi.local."
    assert found["addresses"] == [lan["musicpi"].address]
    assert found["port"] == 5555
    txt = found["txt"]
    assert {k: txt[k] for k in ("txtvers", "proto", "export", "nfsvers", "mpd_port", "music", "state", "ver")} == {
        "txtvers": "1", "proto": "1", "export": "/srv/music", "nfsvers": "4", "mpd_port": "6600",
        "music": "Music", "state": "up", "ver": __version__}
    assert len(txt["boot"]) >= 16
    rc, _ = peers.browse_json(lan["kitchen"])
    assert rc == 0
    assert peers.stop(srv) == 0
    assert "withdrew musicpi._pistop._tcp.local. (goodbye sent)" in srv.text()


def test_browse_exits_1_when_no_server_is_found(make_lan):
    lan = make_lan(["kitchen"])
    proc = lan["kitchen"].run(pm_argv("browse", "--timeout", "1"), env=ENV, timeout=30)
    assert proc.returncode == 1
    assert "no pistop server found in 1 s" in proc.stderr


def test_client_plans_bring_up_and_tear_down_as_the_server_comes_and_goes(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    cl = peers.client(lan["kitchen"], tmp_path)
    cl.wait("no key", 20)
    srv = peers.server(lan["musicpi"], tmp_path)
    cl.wait(r"kitchen: server musicpi \(198\.18\.0\.11\) appeared -> mount 198\.18\.0\.11:/srv/music at "
            r"/mnt/music, point mpd at 198\.18\.0\.11:6600, start mpd", 30)
    cl.wait("kitchen: up with musicpi", 10)
    status = lambda: json.loads(lan["kitchen"].run(  # noqa: E731
        pm_argv("status", "--json", "--state-dir", str(tmp_path / "state-kitchen")), env=ENV).stdout)
    wait_for(lambda: (status()["client"] or {}).get("phase") == "up", 10, what="status to say up")
    assert status()["client"]["server"]["instance"] == "musicpi"
    srv.wait("client kitchen is up", 10)
    assert peers.stop(srv) == 0
    assert "stopping (stopping): telling 1 client(s)" in srv.text()
    cl.wait(r"kitchen: server musicpi is stopping -> stop mpd, unmount /mnt/music", 20)
    cl.wait(r"plan 2 step \d+/\d+: would tell the server this board is down", 10)
    assert peers.stop(cl) == 0
    assert cl.count("appeared ->") == 1 and cl.count("-> stop mpd") == 1


def test_two_servers_pinning_and_first_seen(make_lan, tmp_path):
    lan = make_lan(["musicpi", "attic", "kitchen", "bedroom"])
    pinned = peers.client(lan["kitchen"], tmp_path, "--server", "attic")
    first = peers.client(lan["bedroom"], tmp_path)
    peers.server(lan["musicpi"], tmp_path)
    first.wait(r"server musicpi \(198\.18\.0\.11\) appeared ->", 30)
    pinned.wait(r"server musicpi \(198\.18\.0\.11\) appeared; ignored, pinned to attic", 30)
    attic = peers.server(lan["attic"], tmp_path)
    pinned.wait(r"server attic \(198\.18\.0\.12\) appeared -> mount 198\.18\.0\.12:/srv/music", 30)
    first.wait(r"server attic \(198\.18\.0\.12\) appeared; staying with musicpi", 30)
    assert pinned.count("server musicpi.*->") == 0
    # the pinned server leaves: the pinned client tears down and does not fall back to musicpi
    peers.stop(attic)
    pinned.wait("server attic is stopping -> stop mpd", 20)
    mark = pinned.mark()
    wait_for(lambda: pinned.find(r"plan 2 step 6/6", 0), 10, what="tear-down to finish")
    assert pinned.find(r"musicpi.*appeared ->", mark) is None
    assert first.count("appeared ->") == 1


def test_a_taken_instance_name_is_renamed_and_logged(make_lan, tmp_path):
    lan = make_lan(["musicpi", "attic", "kitchen"])
    peers.server(lan["musicpi"], tmp_path)
    peers.browse_until(lan["kitchen"], "musicpi")
    second = peers.server(lan["attic"], tmp_path, "--instance", "musicpi")
    second.wait(r"the name musicpi is already taken on the LAN; advertising as musicpi-2", 30)
    found = peers.browse_until(lan["kitchen"], "musicpi-2")
    assert found["addresses"] == [lan["attic"].address]


def test_a_renamed_keyed_server_is_signed_for_its_new_name_at_once(make_lan, tmp_path):
    """The TXT MAC covers the instance name: after a rename the record is signed again
    right away, not at the next refresh (150 s later)."""
    lan = make_lan(["musicpi", "attic", "kitchen"])
    key = peers.make_key(tmp_path)
    # the first must own the name before the second probes for it, or either may be renamed
    peers.server(lan["musicpi"], tmp_path, "--key-file", key).wait(r"musicpi: advertising musicpi\._pistop", 30)
    second = peers.server(lan["attic"], tmp_path, "--instance", "musicpi", "--key-file", key)
    second.wait(r"advertising as musicpi-2", 30)

    def signed():
        _, found = peers.browse_json(lan["kitchen"], 2.0, "--key-file", key)
        return next((f for f in found if f["instance"] == "musicpi-2" and f["authenticated"]), None)

    assert wait_for(signed, 30, interval=0, what="musicpi-2 with a valid MAC")["addresses"] == [lan["attic"].address]


def test_address_change_goes_out_as_an_update_of_the_same_service(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    peers.server(lan["musicpi"], tmp_path)
    watch = peers.start(lan["kitchen"], "browse", "--watch", "--json", "--timeout", "60", name="browse --watch")
    cl = peers.client(lan["kitchen"], tmp_path)
    watch.wait('"event": "added"', 30)
    cl.wait("up with musicpi", 30)
    host = lan["musicpi"]
    # a DHCP lease that came back with another address
    host.run(["ip", "addr", "del", "198.18.0.11/24", "dev", "eth0"], check=True)
    host.run(["ip", "addr", "add", "198.18.0.50/24", "dev", "eth0"], check=True)
    watch.wait(r'"event": "updated".*"addresses": \["198\.18\.0\.50"\]', 30)
    cl.wait(r"server musicpi moved to 198\.18\.0\.50 -> mount 198\.18\.0\.50:/srv/music", 30)
    assert watch.count('"event": "removed"') == 0


def test_avahi_browse_sees_our_server_with_its_txt(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    peers.start_avahi(lan["kitchen"], tmp_path)
    peers.server(lan["musicpi"], tmp_path)
    peers.browse_until(lan["kitchen"], "musicpi")

    def resolved():
        out = lan["kitchen"].run(["avahi-browse", "-rpt", "_pistop._tcp"], timeout=20).stdout
        return next((line for line in out.splitlines() if line.startswith("=") and ";musicpi;" in line), None)

    line = wait_for(resolved, 30, interval=0.5, what="avahi-browse to resolve musicpi")
    fields = line.split(";")
    assert fields[6:9] == ["musicpi.local", "198.18.0.11", "5555"]
    for item in ('"txtvers=1"', '"proto=1"', '"export=/srv/music"', '"mpd_port=6600"', '"state=up"',
                 '"music=Music"', f'"ver={__version__}"'):
        assert item in fields[9]


def test_our_browse_sees_a_service_published_by_avahi(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    peers.start_avahi(lan["kitchen"], tmp_path)
    lan["kitchen"].spawn(["avahi-publish", "-s", "kitchen-music", "_pistop._tcp", "5556", "txtvers=1",
                          "proto=1", "export=/srv/music", "mpd_port=6600", "state=up", "future=yes"])
    found = peers.browse_until(lan["musicpi"], "kitchen-music")
    assert found["addresses"] == ["198.18.0.12"] and found["port"] == 5556
    assert found["export"] == "/srv/music" and found["mpd_port"] == 6600
    assert found["txt"]["future"] == "yes"


def test_malformed_records_are_ignored_with_one_warning_each(make_lan, tmp_path):
    lan = make_lan(["rogue", "kitchen"])
    peers.start_avahi(lan["rogue"], tmp_path)
    for name, txt in [("dotdot", ["export=/srv/../etc"]), ("option", ["export=/-oremount"]),
                      ("noport", [])]:
        lan["rogue"].spawn(["avahi-publish", "-s", name, "_pistop._tcp", "5555", "txtvers=1", "proto=1",
                            "state=up", *(txt or ["export=/srv/music"]), *(["mpd_port=6600"] if txt else [])])
    watch = Output(lan["kitchen"].spawn(pm_argv("browse", "--watch", "--timeout", "8"), env=ENV), "browse")
    assert watch.proc.wait(40) == 1  # nothing valid was seen
    text = watch.text()
    assert text.count("warning: ignoring dotdot._pistop._tcp.local.: export='/srv/../etc' contains '..'") == 1
    assert text.count("warning: ignoring option._pistop._tcp.local.: export='/-oremount' has a part starting "
                      "with '-'") == 1
    assert text.count("warning: ignoring noport._pistop._tcp.local.: TXT has no mpd_port=") == 1
    assert "added" not in text
