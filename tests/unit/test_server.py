"""The server process's own decisions, without a network: what its shutdown helper
is started with, how it comes back from a shutdown that did not happen, and
that asking systemd why it stops does not stall its event loop."""

from __future__ import annotations

import asyncio
import json
import threading

from click.testing import CliRunner

from pistop_mdns import auth, cli, config
from pistop_mdns.actions import server
from pistop_mdns.channel import ClientInfo
from pistop_mdns.executor import Runner


def make_server(tmp_path) -> server.Server:
    key = tmp_path / "key"
    key.write_text(auth.generate_key())
    key.chmod(0o600)
    cfg = config.load("/dev/null", None, {("general", "state_dir"): str(tmp_path),
                                          ("general", "key_file"): str(key),
                                          ("general", "hostname"): "musicpi",
                                          ("server", "instance"): "musicpi",
                                          ("server", "export"): "/srv/music"})
    return server.Server(cfg, Runner(timeout=5), config_args=["--config", "/etc/x.toml"],
                         shutdown_flags=["--state-dir", str(tmp_path)])


class FakeAdvertiser:
    """Stands in for mdns.Advertiser: records what would go out on the LAN."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.addresses = ["198.18.0.11"]

    async def update(self, name, properties):
        self.calls.append(("update", name, properties["state"]))

    async def withdraw(self):
        self.calls.append(("withdraw",))

    async def register(self, type_, instance, port, properties):
        self.calls.append(("register", instance, properties["state"]))
        return f"{instance}.{type_}"


class Writer:
    def __init__(self):
        self.data = b""

    def write(self, data):
        self.data += data

    async def drain(self):
        pass

    def close(self):
        pass


async def control(srv: server.Server, msg: dict) -> dict:
    reader = asyncio.StreamReader()
    reader.feed_data(json.dumps(msg).encode() + b"\n")
    writer = Writer()
    await srv._control(reader, writer)
    return json.loads(writer.data)


def test_the_shutdown_helper_gets_the_servers_command_line_flags(monkeypatch):
    seen = {}
    monkeypatch.setattr(server, "run", lambda cfg, **kw: seen.update(kw) or 0)
    result = CliRunner().invoke(cli.main, ["--config", "/dev/null", "server", "--state-dir", "/run/x",
                                           "--key-file", "/etc/k", "--advertise-rsync", "--export", "/srv"])
    assert result.exit_code == 0, result.output
    assert seen["config_args"] == ["--config", "/dev/null"]
    assert seen["shutdown_flags"] == ["--key-file", "/etc/k", "--state-dir", "/run/x"]


def test_a_remote_shutdown_runs_the_helper_with_the_same_configuration(tmp_path, monkeypatch):
    srv = make_server(tmp_path)
    started = []
    monkeypatch.setattr(server.subprocess, "Popen", lambda argv, **kw: started.append(argv))
    ok, _ = asyncio.run(srv._command("shutdown", ["-h", "now"], ClientInfo("kitchen", "198.18.0.12", 0, 0)))
    assert ok
    assert started[0][1:] == ["-m", "pistop_mdns", "--config", "/etc/x.toml", "shutdown", "--state-dir",
                              str(tmp_path), "--", "-h", "now"]


def test_a_failed_shutdown_brings_the_server_back_up(tmp_path):
    async def scenario():
        srv = make_server(tmp_path)
        srv.advertiser = FakeAdvertiser()
        srv.name = "musicpi._pistop._tcp.local."
        result = await control(srv, {"t": "announce", "reason": "poweroff", "wait": 0})
        assert result["ok"] and srv.state == "poweroff"
        assert await control(srv, {"t": "announce", "reason": "up"}) == {"t": "result", "ok": True}
        assert srv.state == "up"
        # withdrawn and registered again: boards that tore down see the server come back
        assert srv.advertiser.calls == [("update", srv.name, "poweroff"), ("withdraw",),
                                        ("register", "musicpi", "up")]

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_the_announcement_answers_once_the_boards_that_power_off_are_off(tmp_path):
    async def scenario():
        srv = make_server(tmp_path)
        srv.advertiser = FakeAdvertiser()
        srv.name = "musicpi._pistop._tcp.local."
        srv.listener.powering_off = {"kitchen": ("198.18.0.12", 40000), "attic": ("198.18.0.13", 40001)}
        silent_after = {"198.18.0.12": 3, "198.18.0.13": 10 ** 6}  # the attic never goes off

        async def answers(peer):
            silent_after[peer[0]] -= 1
            return silent_after[peer[0]] >= 0

        srv.listener.answers = answers
        result = await control(srv, {"t": "announce", "reason": "poweroff", "wait": 2})
        assert (result["ok"], result["off"], result["still_on"], result["still_up"]) == \
            (False, ["kitchen"], ["attic"], [])

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_shutdown_that_never_happens_is_undone_after_a_while(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "REVERT_AFTER", 0.2)

    async def scenario():
        srv = make_server(tmp_path)
        srv.advertiser = FakeAdvertiser()
        srv.name = "musicpi._pistop._tcp.local."
        await control(srv, {"t": "announce", "reason": "poweroff", "wait": 0})
        for _ in range(50):
            if srv.state == "up":
                break
            await asyncio.sleep(0.05)
        assert srv.state == "up"

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_asking_systemd_why_we_stop_does_not_stall_the_event_loop(tmp_path):
    async def scenario():
        srv = make_server(tmp_path)
        answered = threading.Event()

        def slow_systemctl():
            # Returns only once the event loop has run the task below.
            assert answered.wait(5), "the event loop was blocked"
            return "poweroff"

        srv._stop_reason = slow_systemctl

        async def meanwhile():
            await asyncio.sleep(0.05)
            answered.set()

        task = asyncio.ensure_future(meanwhile())
        assert await srv._final_reason() == "poweroff"
        await task

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_server_started_again_at_once_signs_after_its_previous_run(tmp_path):
    """Three signatures in one second put the counter two seconds ahead of the
    clock; the next run carries on after it, so its first record is newer than
    the last one (a `stopping` a host may have captured) of the run before."""
    first = make_server(tmp_path)
    stamps = [int(first._properties()["ts"]) for _ in range(3)]
    assert stamps == sorted(set(stamps))
    again = make_server(tmp_path)  # same state directory, same machine
    assert int(again._properties()["ts"]) > stamps[-1]


def test_an_unreadable_signature_time_is_only_the_clock(tmp_path):
    (tmp_path / "server.signed-at").write_text("garbage\n")
    assert int(make_server(tmp_path)._properties()["ts"]) > 0
