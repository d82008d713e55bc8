"""The liveness channel over loopback TCP: handshake, heartbeats, notices, keys, commands."""

from __future__ import annotations

import asyncio
import json

import pytest

from pistop_mdns import channel

KEY = b"0123456789abcdef0123456789abcdef"
OTHER = b"fedcba9876543210fedcba9876543210"


class Events:
    def __init__(self):
        self.items = []
        self.changed = asyncio.Event()

    def add(self, *item):
        self.items.append(item)
        self.changed.set()

    async def wait(self, kind, timeout=5.0):
        async def look():
            while True:
                for item in self.items:
                    if item[0] == kind:
                        return item
                self.changed.clear()
                await self.changed.wait()
        return await asyncio.wait_for(look(), timeout)


def follower(events: Events, key=None, name="kitchen", heartbeat=0.05) -> channel.Follower:
    return channel.Follower(
        name, key, heartbeat,
        on_up=lambda n, address, boot: events.add("up", n, address, boot),
        on_heartbeat=lambda n: events.add("hb", n),
        on_lost=lambda n: events.add("lost", n),
        on_notice=lambda n, r, a: events.add("notice", n, r, a),
    )


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def linked(listener: channel.Listener, key=None) -> tuple[channel.Follower, Events, int]:
    """`listener` started on loopback and a board's follower connected to it."""
    port = await listener.start(0, "127.0.0.1")
    events = Events()
    f = follower(events, key)
    f.follow({"musicpi": ("127.0.0.1", port)})
    await events.wait("up")
    return f, events, port


@pytest.mark.parametrize("key", [None, KEY])
def test_client_connects_heartbeats_reports_and_gets_the_notice(key):
    async def scenario():
        listener = channel.Listener("musicpi", key, heartbeat=0.05, boot="b-1")
        port = await listener.start(0, "127.0.0.1")
        events = Events()
        f = follower(events, key)
        f.follow({"musicpi": ("127.0.0.1", port)})
        assert await events.wait("up") == ("up", "musicpi", "127.0.0.1", "b-1")
        await events.wait("hb")
        assert await f.report("musicpi", "up")
        assert not await f.report("other", "up")
        await asyncio.sleep(0.2)
        (client,) = listener.client_list()
        assert (client["name"], client["address"], client["state"], client["authenticated"]) == \
            ("kitchen", "127.0.0.1", "up", key is not None)
        await listener.announce("poweroff")
        notice = await events.wait("notice")
        assert notice == ("notice", "musicpi", "poweroff", key is not None)
        await f.report("musicpi", "down")
        assert await listener.wait_clients_down(3) == []
        await f.close()
        await listener.close()

    run(scenario())


def test_wrong_key_is_refused_both_ways():
    async def scenario():
        listener = channel.Listener("musicpi", KEY, heartbeat=0.05)
        port = await listener.start(0, "127.0.0.1")
        with pytest.raises(channel.ChannelError, match="refused: authentication failed"):
            await channel.connect("127.0.0.1", port, name="kitchen", key=OTHER)
        with pytest.raises(channel.ChannelError, match="did not welcome|refused"):
            await channel.connect("127.0.0.1", port, name="kitchen", key=None)
        assert listener.client_list() == []
        await listener.close()

    run(scenario())


def test_client_rejects_a_server_that_does_not_know_the_key():
    """A spoofing server without the key cannot answer the client's challenge."""

    async def scenario():
        async def fake(reader, writer):
            writer.write(json.dumps({"t": "hello", "proto": 1, "server": "musicpi", "nonce": "1" * 32}).encode() + b"\n")
            await writer.drain()
            await reader.readline()
            writer.write(json.dumps({"t": "welcome", "mac": "00" * 32}).encode() + b"\n")
            await writer.drain()
            await asyncio.sleep(1)
            writer.close()

        server = await asyncio.start_server(fake, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(channel.ChannelError, match="failed authentication"):
            await channel.connect("127.0.0.1", port, name="kitchen", key=KEY)
        server.close()

    run(scenario())


def test_replayed_or_forged_messages_end_the_session():
    async def scenario():
        listener = channel.Listener("musicpi", KEY, heartbeat=10)
        port = await listener.start(0, "127.0.0.1")
        session, _ = await channel.connect("127.0.0.1", port, name="kitchen", key=KEY)
        await session.send({"t": "state", "state": "up"})
        await asyncio.sleep(0.1)
        # reflected: a message as the server would send it, sent by the client
        msg = {"t": "state", "state": "down", "seq": 5}
        msg["mac"] = session._mac(msg, "server")
        session.writer.write(json.dumps(msg).encode() + b"\n")
        await session.writer.drain()
        await asyncio.sleep(0.2)
        assert listener.client_list() == []  # wrong direction: the server hung up
        await session.close()
        session, _ = await channel.connect("127.0.0.1", port, name="kitchen", key=KEY)
        await session.send({"t": "state", "state": "up"})
        await asyncio.sleep(0.1)
        assert listener.client_list()[0]["state"] == "up"
        # replay: the same seq again
        msg = {"t": "state", "state": "down", "seq": 0}
        msg["mac"] = session._mac(msg, "client")
        session.writer.write(json.dumps(msg).encode() + b"\n")
        await session.writer.drain()
        await asyncio.sleep(0.2)
        assert listener.client_list() == []  # the server hung up
        await session.close()
        await listener.close()

    run(scenario())


def test_remote_command_needs_a_key():
    async def scenario():
        calls = []

        async def on_command(cmd, args, info):
            calls.append((cmd, args, info.name))
            return True, "shutdown started"

        open_listener = channel.Listener("musicpi", None, heartbeat=10, on_command=on_command)
        port = await open_listener.start(0, "127.0.0.1")
        result = await channel.send_command("127.0.0.1", port, name="kitchen", key=None, cmd="shutdown", args=[])
        assert result["ok"] is False and "need a key" in result["msg"]
        assert calls == []
        await open_listener.close()

        keyed = channel.Listener("musicpi", KEY, heartbeat=10, on_command=on_command)
        port = await keyed.start(0, "127.0.0.1")
        result = await channel.send_command("127.0.0.1", port, name="kitchen", key=KEY, cmd="shutdown",
                                            args=["-r"])
        assert result["ok"] is True and result["msg"] == "shutdown started"
        assert calls == [("shutdown", ["-r"], "kitchen")]
        await keyed.close()

    run(scenario())


def test_follower_reconnects_after_the_server_comes_back():
    async def scenario():
        listener = channel.Listener("musicpi", None, heartbeat=0.05)
        f, events, port = await linked(listener)
        await listener.close()
        await events.wait("lost")
        events.items.clear()
        again = channel.Listener("musicpi", None, heartbeat=0.05)
        await again.start(port, "127.0.0.1")
        await events.wait("up", timeout=10)
        await f.close()
        await again.close()

    run(scenario())


def test_garbage_from_a_peer_is_refused():
    async def scenario():
        listener = channel.Listener("musicpi", None, heartbeat=10)
        port = await listener.start(0, "127.0.0.1")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        writer.write(b"\xff\xfe not json\n")
        await writer.drain()
        assert await reader.read() == b""  # closed
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        writer.write(b"x" * (channel.MAX_LINE * 3) + b"\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert listener.client_list() == []
        await listener.close()

    run(scenario())


def test_a_relay_elsewhere_cannot_pass_for_the_keyed_server():
    """The server's proof covers the address it was reached at: a host that
    relays the handshake to the real server from another address fails."""

    async def scenario():
        listener = channel.Listener("musicpi", KEY, heartbeat=10, boot="b1")
        port = await listener.start(0, "127.0.0.1")

        async def relay(reader, writer):
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)

            async def pipe(src, dst):
                while line := await src.readline():
                    dst.write(line)
                    await dst.drain()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

        relayed = await asyncio.start_server(relay, "127.0.0.2", 0)
        relay_port = relayed.sockets[0].getsockname()[1]
        with pytest.raises(channel.ChannelError, match="failed authentication"):
            await channel.connect("127.0.0.2", relay_port, name="kitchen", key=KEY)
        session, hello = await channel.connect("127.0.0.1", port, name="kitchen", key=KEY)
        assert (hello.name, hello.boot) == ("musicpi", "b1")
        await session.close()
        relayed.close()
        await listener.close()

    run(scenario())


ODD_WELCOMES = [
    {"t": "welcome", "mac": "\u00e9" * 64},
    {"t": "welcome", "mac": 7},
    {"t": "welcome", "mac": None},
    {"t": "error", "msg": {"x": 1}},
]
ODD_HELLOS = [
    {"t": "hello", "proto": 1, "server": "musicpi", "nonce": "0" * 32, "hb": "soon"},
    {"t": "hello", "proto": True, "server": "musicpi", "nonce": "0" * 32},
    {"t": "hello", "proto": 1, "server": "\u001b[2J", "nonce": "0" * 32},
    {"t": "hello", "proto": 1, "server": "musicpi", "nonce": ["x"]},
    {"t": "hello", "proto": 1, "server": "musicpi", "nonce": "0" * 32, "boot": "$(reboot)"},
]


@pytest.mark.parametrize("odd", ODD_WELCOMES + ODD_HELLOS)
def test_odd_answers_end_one_connection_and_the_follower_dials_again(odd):
    async def scenario():
        connections = []

        async def impostor(reader, writer):
            connections.append(1)
            hello = odd if odd["t"] == "hello" else {"t": "hello", "proto": 1, "server": "musicpi",
                                                      "nonce": "0" * 32}
            writer.write(json.dumps(hello).encode() + b"\n")
            await writer.drain()
            await reader.readline()
            writer.write(json.dumps(odd).encode() + b"\n")
            await writer.drain()
            await asyncio.sleep(0.5)
            writer.close()

        server = await asyncio.start_server(impostor, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        events = Events()
        f = follower(events, KEY)
        f.follow({"musicpi": ("127.0.0.1", port)})
        for _ in range(100):
            if len(connections) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(connections) >= 2  # it dialled again after the odd answer
        assert not [e for e in events.items if e[0] == "up"]
        await f.close()
        server.close()

    run(scenario())


def test_odd_messages_in_a_session_end_it_and_the_follower_reconnects():
    async def scenario():
        sessions = []

        async def server(reader, writer):
            sessions.append(1)
            writer.write(json.dumps({"t": "hello", "proto": 1, "server": "musicpi", "nonce": "1" * 32}).encode()
                         + b"\n")
            await reader.readline()
            writer.write(b'{"t": "welcome"}\n')
            writer.write(b'{"t": "notice", "reason": "explode", "seq": 0}\n')
            await writer.drain()
            await asyncio.sleep(0.5)
            writer.close()

        srv = await asyncio.start_server(server, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        events = Events()
        f = follower(events)
        f.follow({"musicpi": ("127.0.0.1", port)})
        for _ in range(100):
            if len(sessions) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(sessions) >= 2
        assert not [e for e in events.items if e[0] == "notice"]
        await f.close()
        srv.close()

    run(scenario())


def test_handshakes_beyond_the_limit_wait_their_turn_and_idle_ones_are_bounded(monkeypatch):
    monkeypatch.setattr(channel, "MAX_WAITING", channel.MAX_PENDING + 2)

    async def scenario():
        listener = channel.Listener("musicpi", KEY, heartbeat=10)
        port = await listener.start(0, "127.0.0.1")
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(channel.MAX_PENDING)]
        for reader, _ in idle:
            await reader.readline()  # each got its hello and says nothing
        # a board dialling now waits for a slot instead of being turned away
        waiting = asyncio.ensure_future(channel.connect("127.0.0.1", port, name="kitchen", key=KEY))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        idle[0][1].close()  # one slot frees up: the waiting board gets through
        session, _ = await asyncio.wait_for(waiting, 5)
        # past MAX_WAITING not yet through, a connection is closed at once
        extra = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]  # 15 idle + 3 = 18
        reader, _ = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        for _, w in idle[1:] + extra:
            w.close()
        await session.close()
        await listener.close()

    run(scenario())


def test_a_static_link_learns_the_server_and_its_record_from_the_hello():
    async def scenario():
        record = {"txtvers": "1", "proto": "1", "export": "/srv/music", "mpd_port": "6600", "state": "up"}
        listener = channel.Listener("musicpi", KEY, heartbeat=0.05, boot="b1", record=lambda: record)
        port = await listener.start(0, "127.0.0.1")
        events = Events()
        f = channel.Follower("kitchen", KEY, 0.05,
                             on_up=lambda n, a, b: events.add("up", n, a, b),
                             on_heartbeat=lambda n: events.add("hb", n),
                             on_lost=lambda n: events.add("lost", n),
                             on_notice=lambda n, r, a: events.add("notice", n, r, a),
                             on_hello=lambda n, a, p, hello, via: events.add("hello", n, a, p, hello.record, via))
        f.follow_static([("localhost", port)])
        name = "musicpi._pistop._tcp.local."
        assert await events.wait("hello") == ("hello", name, "127.0.0.1", port, record, "localhost")
        assert events.items.index(("hello", name, "127.0.0.1", port, record, "localhost")) < \
            events.items.index(await events.wait("up"))
        assert f.connected(name) and await f.report(name, "up")
        # the same server found over mDNS at the same address needs no second connection
        f.follow({name: ("127.0.0.1", port)})
        await asyncio.sleep(0.2)
        assert len(listener.clients) == 1
        await listener.announce("stopping")
        assert (await events.wait("notice"))[2] == "stopping"
        await f.close()
        await listener.close()

    run(scenario())


def test_a_static_host_that_does_not_resolve_is_tried_again_with_one_warning(caplog):
    async def scenario():
        events = Events()
        f = follower(events)
        f.follow_static([("no-such-host.invalid", 5555)])
        await asyncio.sleep(0.5)
        await f.close()
        assert not events.items

    with caplog.at_level("WARNING", "pistop_mdns.channel"):
        run(scenario())
    assert [r.getMessage() for r in caplog.records] == [
        "static server no-such-host.invalid:5555: no address for no-such-host.invalid (not in /etc/hosts or DNS?); "
        "trying again"]


async def said_off(listener, name="kitchen"):
    for _ in range(100):
        if name in listener.powering_off:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the listener never heard {name} say off")


def test_a_board_that_says_off_is_waited_for_until_its_address_stops_answering():
    async def scenario():
        listener = channel.Listener("musicpi", KEY, heartbeat=0.05)
        probes = []
        answering = [True, True, False, True, False, False]  # one silent probe alone is not enough

        async def answers(peer):
            probes.append(peer[0])
            return answering.pop(0)

        listener.answers = answers
        f, _, _ = await linked(listener, KEY)
        await f.report("musicpi", "down")
        await f.report("musicpi", "off")
        await said_off(listener)
        # still connected: not probed, still on when the time is up
        assert await listener.wait_clients_off(0.3, interval=0.05) == ([], ["kitchen"])
        assert probes == []
        await f.close()  # its power-off command ended the client
        assert await listener.wait_clients_off(5, interval=0.01) == (["kitchen"], [])
        assert probes == ["127.0.0.1"] * 6 and answering == []
        assert listener.powering_off == {}
        await listener.close()

    run(scenario())


def test_a_board_whose_power_off_failed_is_not_waited_for():
    async def scenario():
        listener = channel.Listener("musicpi", None, heartbeat=0.05)
        f, _, _ = await linked(listener)
        await f.report("musicpi", "off")
        await said_off(listener)
        await f.report("musicpi", "down")  # the power-off command failed
        assert await listener.wait_clients_down(3) == []
        assert await listener.wait_clients_off(3) == ([], [])
        await f.close()
        await listener.close()

    run(scenario())


def test_a_host_that_is_on_answers_even_on_a_closed_port():
    async def scenario():
        assert await channel.answers(("127.0.0.1", 0))  # refused: on
        assert await channel.answers(("::1", 0, 0, 0))
        assert not await channel.answers(())

    run(scenario())
