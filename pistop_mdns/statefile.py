"""State files under state_dir (for `pistop-mdns status`) and sd_notify.

A running server or client rewrites STATE_DIR/ROLE.json atomically whenever
something a user would ask about changes. `read` returns None when no such
process runs (no file, or its PID is gone), so `status` can tell "not
running" from "running and waiting".
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from typing import Any


def path(state_dir: str, role: str) -> str:
    return os.path.join(state_dir, f"{role}.json")


def write(state_dir: str, role: str, data: dict[str, Any]) -> None:
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    data = {"pid": os.getpid(), **data}
    fd, tmp = tempfile.mkstemp(dir=state_dir, prefix=f".{role}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path(state_dir, role))
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def remove(state_dir: str, role: str) -> None:
    try:
        os.unlink(path(state_dir, role))
    except FileNotFoundError:
        pass


def read(state_dir: str, role: str) -> dict[str, Any] | None:
    try:
        with open(path(state_dir, role)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    pid = data.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return data


def sd_notify(message: str) -> bool:
    """Tell systemd (Type=notify units) about our state; a no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(address)
            s.sendall(message.encode())
        return True
    except OSError:
        return False
