"""The fault suite (issue 5), all real processes on the simulated LAN: a crashed server,
a pulled cable, packet loss, a server restarting every second, a spoofer with a key set,
and random TXT records from the LAN."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.helpers import ENV, PYTHON, Output, need, wait_for
from tests.lan import peers

pytestmark = pytest.mark.lan
ROGUE = str(Path(__file__).with_name("rogue.py"))

# A tear-down plan: mpd stopped first, or asked to stop first when the server cannot answer.
TEAR_DOWN = r"-> (stop mpd|ask mpd to stop)"


def rogue(host, instance: str, txt_bytes: bytes, seconds: float = 20) -> Output:
    out = Output(host.spawn([PYTHON, ROGUE, host.address, instance, "5555", str(seconds), txt_bytes.hex()],
                            env=ENV), f"{host.name}: rogue {instance}")
    out.wait("registered", 20)
    return out


def txt_record(props: dict[str, str]) -> bytes:
    out = b""
    for k, v in props.items():
        item = f"{k}={v}".encode()
        out += bytes([len(item)]) + item
    return out


def netns_pids(host) -> set[int]:
    out = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True, text=True, timeout=10).stdout
    return {int(p) for p in out.split()}


def plan_lines(out: Output) -> list[tuple[int, int, int]]:
    return [(int(m[1]), int(m[2]), int(m[3])) for m in re.finditer(r"plan (\d+) step (\d+)/(\d+)", out.text())]


def assert_one_plan_at_a_time(out: Output) -> None:
    """Every plan's steps run in order and finish before the next plan starts."""
    current = None
    for plan, step, total in plan_lines(out):
        if current is None or current[0] != plan:
            assert current is None or current[1] == current[2], f"plan {current} interrupted by {plan}"
            assert step == 1, f"plan {plan} started at step {step}"
            assert current is None or plan > current[0]
        else:
            assert step == current[1] + 1
        current = (plan, step, total)


def test_killed_server_is_torn_down_after_the_dead_time_without_power_off(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    cl = peers.client(lan["kitchen"], tmp_path, "--power-off")
    srv = peers.server(lan["musicpi"], tmp_path)
    cl.wait("up with musicpi", 30)
    srv.wait("client kitchen is up", 10)
    killed = time.monotonic()
    os.kill(srv.proc.pid, signal.SIGKILL)
    stamp, line = cl.wait(r"server musicpi silent for 10 s \(crashed or unplugged\) -> ", 40)
    assert "power off" not in line
    assert stamp - killed >= 9.0, "torn down before the dead time ran out"
    assert cl.count(TEAR_DOWN) == 1


def test_pulled_cable_tears_down_and_the_client_recovers_when_it_is_back(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    cl = peers.client(lan["kitchen"], tmp_path)
    peers.server(lan["musicpi"], tmp_path)
    cl.wait("up with musicpi", 30)
    lan["musicpi"].link(False)
    cl.wait(r"server musicpi silent for 10 s \(crashed or unplugged\) -> ask mpd to stop", 40)
    mark = cl.mark()
    lan["musicpi"].link(True)
    cl.wait(r"server musicpi \(198\.18\.0\.11\) appeared -> mount", 60, start=mark)
    cl.wait("up with musicpi", 20, start=mark)


def test_twenty_percent_packet_loss_causes_no_false_tear_down(make_lan, tmp_path):
    need("nft", package="nftables")
    lan = make_lan(["musicpi", "kitchen"])
    cl = peers.client(lan["kitchen"], tmp_path)
    srv = peers.server(lan["musicpi"], tmp_path)
    cl.wait("up with musicpi", 30)
    for host in (lan["musicpi"], lan["kitchen"]):
        host.run(["nft", "add", "table", "inet", "loss"], check=True)
        host.run(["nft", "add", "chain", "inet", "loss", "in", "{ type filter hook input priority 0; }"], check=True)
        host.run(["nft", "add", "rule", "inet", "loss", "in", "numgen", "random", "mod", "100", "<", "20", "drop"],
                 check=True)
    # the rule really drops about a fifth (each ping crosses both hosts' input once)
    ping = lan["kitchen"].run(["ping", "-c", "50", "-i", "0.05", "-W", "1", lan["musicpi"].address], timeout=60)
    received = int(re.search(r"(\d+) received", ping.stdout)[1])
    assert 20 <= received <= 45, ping.stdout
    time.sleep(60)
    assert cl.count(TEAR_DOWN) == 0, cl.text()
    assert cl.count("silent for") == 0
    assert srv.proc.poll() is None and cl.proc.poll() is None


def test_server_restarting_every_second_converges_without_overlap_or_leaks(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    cl = peers.client(lan["kitchen"], tmp_path)
    before = netns_pids(lan["kitchen"])
    deadline = time.monotonic() + 30
    restarts = 0
    while time.monotonic() < deadline:
        srv = peers.server(lan["musicpi"], tmp_path, "--stop-reason", "restart")
        time.sleep(1.0)
        assert peers.stop(srv) == 0
        lan.processes.remove(srv.proc)
        restarts += 1
    final = peers.server(lan["musicpi"], tmp_path)
    final.wait("client kitchen is up", 40)
    time.sleep(3)
    assert restarts >= 10
    assert_one_plan_at_a_time(cl)
    # a restarting server keeps the share: one bring-up, no tear-down
    assert cl.count("appeared -> mount") == 1, cl.text()
    assert cl.count(TEAR_DOWN) == 0
    assert cl.proc.poll() is None
    assert netns_pids(lan["kitchen"]) == before
    assert netns_pids(lan["musicpi"]) == {lan["musicpi"].pid, final.proc.pid}


def test_server_stopping_every_second_converges_to_up(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen"])
    cl = peers.client(lan["kitchen"], tmp_path, "--flap-settle", "3")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        srv = peers.server(lan["musicpi"], tmp_path)
        time.sleep(1.0)
        peers.stop(srv)
        lan.processes.remove(srv.proc)
    peers.server(lan["musicpi"], tmp_path)
    wait_for(lambda: (lambda p: p and p[-1][1] == p[-1][2])(plan_lines(cl)) and "up with musicpi" in
             cl.text().splitlines()[-1], 60, interval=0.5, what="the client to end up with musicpi")
    assert_one_plan_at_a_time(cl)
    ups, downs = cl.count("appeared -> mount"), cl.count(TEAR_DOWN)
    assert ups == downs + 1


def test_spoofed_server_is_ignored_when_a_key_is_set(make_lan, tmp_path):
    lan = make_lan(["musicpi", "kitchen", "rogue", "bedroom"])
    key = peers.make_key(tmp_path)
    cl = peers.client(lan["kitchen"], tmp_path, "--key-file", key)
    peers.server(lan["musicpi"], tmp_path, "--key-file", key)
    cl.wait(r"server musicpi \(198\.18\.0\.11\) appeared -> mount", 30)
    cl.wait("up with musicpi", 10)
    # same instance name, the rogue's address, a TXT without (or with a wrong) MAC
    bogus = {"txtvers": "1", "proto": "1", "export": "/evil", "mpd_port": "6600", "state": "poweroff"}
    rogue(lan["rogue"], "musicpi", txt_record({**bogus, "ts": str(int(time.time())), "mac": "0" * 64}), 8)
    cl.wait(r"warning: ignoring musicpi\._pistop\._tcp\.local\.: MAC does not match", 20)
    time.sleep(12)  # the spoofer says goodbye for "musicpi" meanwhile: the channel still hears the real one
    assert cl.count("warning: ignoring musicpi") == 1
    assert cl.count(TEAR_DOWN) == 0 and cl.count("198.18.0.13") == 0
    # a board that only ever sees the spoofer never mounts anything
    fresh = peers.client(lan["bedroom"], tmp_path, "--key-file", key, "--server", "evil")
    rogue(lan["rogue"], "evil", txt_record(bogus), 6)
    fresh.wait(r"warning: ignoring evil\._pistop\._tcp\.local\.: record is not signed", 20)
    time.sleep(3)
    assert fresh.count("appeared ->") == 0


@pytest.fixture(scope="module")
def watched_lan(tmp_path_factory):
    """One LAN with a running client for many generated records. The client is pinned to
    a name no record has, so a record it accepts is logged (and ignored) instead of
    being brought up: every record gives exactly one line, and no action."""
    from pistop_mdns.lan import Lan
    from tests.helpers import need_root

    need_root()
    tmp = tmp_path_factory.mktemp("txt")
    with Lan(["kitchen", "rogue"]) as lan:
        cl = peers.client(lan["kitchen"], tmp, "--server", "nobody")
        cl.wait("no key", 30)
        yield lan, cl


raw_txt = st.lists(
    st.one_of(
        st.binary(min_size=0, max_size=255),
        st.sampled_from([b"export=..", b"export=-o", b"export=/a/../b", b"mpd_port=0", b"state=", b"txtvers=1",
                         b"proto=1", b"export=/srv/\xff\xfe", b"=", b"mpd_port=6600", b"state=up",
                         b"export=/srv/music"]),
    ),
    max_size=12,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=raw_txt, counter=st.integers(0, 10 ** 9))
def test_random_txt_from_the_lan_gives_one_line_no_action_no_crash(watched_lan, items, counter):
    lan, cl = watched_lan
    blob = b"".join(bytes([len(i)]) + i for i in items)[:1400] or b"\x00"
    instance = f"fuzz{counter}"
    mark = cl.mark()
    r = rogue(lan["rogue"], instance, blob, 2)
    assert r.proc.wait(30) == 0
    time.sleep(0.5)
    lines = [line for _, line in cl.lines[mark:] if f"{instance}._pistop" in line or f"server {instance} " in line]
    assert cl.proc.poll() is None, cl.text()
    assert len(lines) <= 1, lines
    for line in lines:
        assert line.startswith(f"warning: ignoring {instance}._pistop._tcp.local.: ") or \
            "appeared; ignored, pinned to nobody" in line, line
    assert cl.find("appeared ->", mark) is None
    assert cl.find("plan ", mark) is None
