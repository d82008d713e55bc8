"""A hostile liveness-channel peer, run inside a LAN host:

    python3 chan_agent.py

Reads one JSON command per line on stdin and prints one JSON event per line:

  {"op": "listen", "host": IP, "port": P, "scripts": [S, ...]}
        serve every connection with the next script (round robin);
        prints {"ev": "listening"}, then per connection {"ev": "conn", "n": N,
        "queued": B} (B: it got a script from "queue")
        and, when its script ended, {"ev": "done", "n": N, "closed": BOOL}
        (closed: the peer closed the connection itself).
  {"op": "queue", "scripts": [S, ...]}
        serve the next connections with these scripts first, once each.
  {"op": "clear"}
        forget the scripts still queued; prints {"ev": "cleared", "n": N}.
  {"op": "dial", "id": X, "host": H, "port": P, "script": S, "wait": SECONDS}
        connect, run S as the client, then wait up to SECONDS for the peer to
        close; prints {"ev": "dialed", "id": X, "connected": B, "closed": B}.
  {"op": "flood", "id": X, "host": H, "port": P, "count": N, "script": S, "wait": SECONDS}
        the same with N connections at once; prints
        {"ev": "flood", "id": X, "connected": C, "closed": K}.

A script S is a list of steps: ["send", HEX] writes bytes, ["read"] reads one
line (10 s at most), ["sleep", SECONDS], ["hold", SECONDS] waits for the peer
to close. The agent closes the connection after the last step.
"""

import asyncio
import json
import sys

LIMIT = 1 << 20


def say(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def run_script(reader, writer, script) -> bool:
    """Runs the steps; True when the peer closed the connection."""
    for step in script:
        op = step[0]
        try:
            if op == "send":
                writer.write(bytes.fromhex(step[1]))
                await writer.drain()
            elif op == "read":
                line = await asyncio.wait_for(reader.readline(), 10)
                if not line:
                    return True
            elif op == "sleep":
                await asyncio.sleep(step[1])
            elif op == "hold":
                return await peer_closes(reader, step[1])
        except (OSError, asyncio.TimeoutError, ValueError, asyncio.LimitOverrunError):
            if op != "read":
                return True
    return False


async def peer_closes(reader, seconds: float) -> bool:
    async def until_end() -> None:
        while await reader.read(65536):
            pass

    try:
        await asyncio.wait_for(until_end(), seconds)
        return True
    except asyncio.TimeoutError:
        return False
    except OSError:
        return True


class Agent:
    def __init__(self):
        self.scripts = [[]]
        self.queued = []
        self.count = 0

    async def serve(self, reader, writer) -> None:
        n = self.count
        self.count += 1
        queued = bool(self.queued)
        script = self.queued.pop(0) if queued else self.scripts[n % len(self.scripts)]
        say({"ev": "conn", "n": n, "queued": queued})
        closed = await run_script(reader, writer, script)
        writer.close()
        say({"ev": "done", "n": n, "closed": closed})

    async def dial(self, host, port, script, wait) -> tuple[bool, bool]:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=LIMIT), 5)
        except (OSError, asyncio.TimeoutError):
            return False, False
        try:
            closed = await run_script(reader, writer, script) or await peer_closes(reader, wait)
        finally:
            writer.close()
        return True, closed

    async def command(self, cmd: dict) -> None:
        op = cmd["op"]
        if op == "listen":
            self.scripts = cmd["scripts"] or [[]]
            await asyncio.start_server(self.serve, cmd["host"], cmd["port"], limit=LIMIT, reuse_address=True)
            say({"ev": "listening"})
        elif op == "queue":
            self.queued.extend(cmd["scripts"])
            say({"ev": "queued", "n": len(self.queued)})
        elif op == "clear":
            say({"ev": "cleared", "n": len(self.queued)})
            self.queued.clear()
        elif op == "dial":
            connected, closed = await self.dial(cmd["host"], cmd["port"], cmd["script"], cmd["wait"])
            say({"ev": "dialed", "id": cmd["id"], "connected": connected, "closed": closed})
        elif op == "flood":
            results = await asyncio.gather(*(self.dial(cmd["host"], cmd["port"], cmd["script"], cmd["wait"])
                                             for _ in range(cmd["count"])))
            say({"ev": "flood", "id": cmd["id"], "connected": sum(c for c, _ in results),
                 "closed": sum(k for _, k in results)})


async def main() -> None:
    agent = Agent()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LIMIT * 8)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    say({"ev": "ready"})
    pending = set()
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        task = asyncio.ensure_future(agent.command(cmd))
        pending.add(task)
        task.add_done_callback(pending.discard)


asyncio.run(main())
