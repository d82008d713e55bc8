"""`pistop-mdns status`: what the running client (or server) on this host is doing.

Reads the state files the running processes keep under state_dir. Exit
status: 0 when the client is up (or, with no client, a server runs), 1 when
the client runs but is not up, 2 when neither runs.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from pistop_mdns import statefile
from pistop_mdns.config import Config


def _ago(then: float | None) -> str:
    if not then:
        return "-"
    seconds = int(time.time() - then)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(then))
    return f"{stamp} ({seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s ago)"


def _yes_no(value: Any) -> str:
    return {True: "yes", False: "no", None: "-"}[value]


def client_text(c: dict[str, Any]) -> str:
    server = c.get("server")
    lines = [f"client {c.get('hostname', '?')}: {c.get('phase')}"]
    if server:
        lines.append(f"  server:      {server['instance']} ({server['address']}), export {server['export']}, "
                     f"mpd port {server['mpd_port']}, channel {'up' if server.get('channel') else 'down'}")
        lines.append(f"  following:   since {_ago(c.get('since'))}")
    else:
        lines.append("  server:      none")
    mode = c.get("mount_mode")
    where = c.get("mountpoint") if mode != "mpd" else "(mpd reads nfs:// itself)"
    lines.append(f"  share:       {mode} {where}, mounted {_yes_no(c.get('mounted'))}")
    lines.append(f"  mpd:         running {_yes_no(c.get('mpd_running'))}")
    if c.get("plan"):
        lines.append(f"  running:     {c['plan']['kind']} ({c['plan']['why']})")
    lines.append(f"  last action: {c.get('last_result') or '-'}")
    seen = c.get("servers_seen") or []
    lines.append(f"  servers:     {', '.join(seen) if seen else 'none seen'}")
    return "\n".join(lines)


def server_text(s: dict[str, Any]) -> str:
    lines = [f"server {s.get('instance')}: {s.get('state')} on {', '.join(s.get('addresses', []))} "
             f"port {s.get('port')}{' (signed)' if s.get('keyed') else ''}, since {_ago(s.get('since'))}"]
    clients = s.get("clients") or []
    lines.append(f"  clients:     {len(clients)}")
    for c in clients:
        lines.append(f"    {c['name']:<16} {c['address']:<16} {c['state']:<8} "
                     f"{'authenticated ' if c.get('authenticated') else ''}connected {_ago(c.get('since'))}")
    return "\n".join(lines)


def run(cfg: Config, *, as_json: bool, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    client = statefile.read(cfg.general.state_dir, "client")
    server = statefile.read(cfg.general.state_dir, "server")
    if as_json:
        out.write(json.dumps({"client": client, "server": server}, indent=1) + "\n")
    else:
        parts = [client_text(client)] if client else []
        parts += [server_text(server)] if server else []
        out.write("\n".join(parts) + "\n" if parts else
                  f"no pistop-mdns client or server runs on this host (no state in {cfg.general.state_dir})\n")
    if client is not None:
        return 0 if client.get("phase") == "up" else 1
    return 0 if server is not None else 2
