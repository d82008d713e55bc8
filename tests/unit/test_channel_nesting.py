"""A channel line nested deeper than json can decode (RecursionError, not ValueError)
ends that connection only, on both ends. Found while writing the LAN fuzz suite."""

from __future__ import annotations

import asyncio

import pytest

from pistop_mdns import channel
from tests.unit.test_channel import Events, follower, run

NESTED = b"[" * 1000 + b"\n"


def test_a_line_nested_too_deep_is_a_channel_error():
    async def scenario():
        reader = asyncio.StreamReader(limit=channel.MAX_LINE * 2)
        reader.feed_data(NESTED)
        with pytest.raises(channel.ChannelError, match="not a JSON line"):
            await channel.read_message(reader, 1)

    run(scenario())


def test_a_server_saying_hello_too_deep_is_dialled_again():
    async def scenario():
        dialled = []

        async def answer(reader, writer):
            dialled.append(1)
            writer.write(NESTED)
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        f = follower(Events())
        f.follow({"deep": ("127.0.0.1", port)})
        for _ in range(100):
            if len(dialled) >= 3:
                break
            await asyncio.sleep(0.1)
        await f.close()
        server.close()
        assert len(dialled) >= 3

    run(scenario())


def test_a_client_saying_hello_too_deep_is_closed_by_the_listener():
    async def scenario():
        listener = channel.Listener("musicpi", None, heartbeat=0.05)
        port = await listener.start(0, "127.0.0.1")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        writer.write(NESTED)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await listener.close()

    run(scenario())
