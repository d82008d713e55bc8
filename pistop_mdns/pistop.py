"""What pistop left on a host, and what becomes of it (pure; `install-service --from-pistop` acts on it).

pistop's create_service made daemontools services in /service: fclient on the
boards, fserver on the music server, update everywhere, rsync.875 for pushing
music. Each keeps its settings in SERVICE/variables/, one file per variable,
read by envdir(8). pistop-mdns reads the variables in `config.BY_ENVVAR`; the
others were for tcpclient/tcpserver, setuidgid, at's mail and the like, and
are listed here with the reason they are no longer needed.
"""

from __future__ import annotations

import os

from pistop_mdns import config

# The old service of each role, in pistop's service directory.
OLD_SERVICE = {"server": "fserver", "client": "fclient", "update": "update", "rsync": "rsync.875"}

# pistop variables pistop-mdns does not read, and why not.
UNUSED = {
    "USER": "the user pistop's scripts ran as: pistop-mdns runs as root",
    "UID": "the user pistop's server ran as: pistop-mdns runs as root",
    "GID": "the group pistop's server ran as: pistop-mdns runs as root",
    "HOME": "for ~/.pistop: the hooks there are still run ([client] hooks_dirs)",
    "PATH": "the service's command path: the unit or run script sets it",
    "MAXDAEMONS": "tcpserver's connection limit: the liveness channel needs none",
    "LOGNAME": "at's mail recipient: the update's output goes to the journal or multilog",
    "DEBIAN_FRONTEND": "pistop-mdns update runs apt non-interactively itself",
    "LOCALIP": "the rsync service's address: rsyncd.conf's port and hosts allow",
    "MAXPERIP": "tcpserver's per-host limit: rsyncd.conf's max connections",
    "SOFT_MEM": "softlimit's memory limit for rsync",
}

# fclient's HOST and PORT named the server: a board keeps them as [client]
# static_servers. fserver and rsync.875 listened there; their successors listen
# on every address, at [server] port (--port) and rsyncd.conf's port.
SERVER_ADDRESS = ("HOST", "PORT")
UNUSED_OFF_BOARD = {
    "HOST": "the address tcpserver listened on: the new service listens on every address",
    "PORT": "the port tcpserver listened on: [server] port (install-service --port) or rsyncd.conf's",
}

# pistop upgraded itself; its successor is the package to keep upgraded now.
OLD_PACKAGE, NEW_PACKAGE = "pistop", "pistop-mdns"


def default_dir(role: str, service_dir: str = "/service") -> str:
    return os.path.join(service_dir, OLD_SERVICE[role])


def variables_dir(service: str) -> str:
    """pistop keeps its variables in SERVICE/variables."""
    return str(config.envdir_path(service))


def read_variables(service: str) -> dict[str, bytes]:
    """Every variable file of an old service (name -> content), hidden ones (.options) left out."""
    directory = variables_dir(service)
    found: dict[str, bytes] = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return found
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            found[name] = f.read()
    return found


def sort_variables(variables: dict[str, bytes], role: str = "client") -> tuple[list[str], list[str], list[str]]:
    """(used by pistop-mdns, known to be unused, unknown) variable names of an old `role`
    service; empty files are unset."""
    used, unused, unknown = [], [], []
    for name, content in sorted(variables.items()):
        if not content.strip():
            continue
        if name in SERVER_ADDRESS:
            (used if role == "client" and variables.get("HOST", b"").strip() else unused).append(name)
        elif name in config.BY_ENVVAR:
            used.append(name)
        elif name in UNUSED:
            unused.append(name)
        else:
            unknown.append(name)
    return used, unused, unknown


def carried_over(name: str, content: bytes) -> tuple[bytes, str | None]:
    """What the new service gets for one used variable, and a note when it differs from the old.

    pistop's UPGRADE list names pistop itself; its successor is kept upgraded instead.
    """
    if name != "UPGRADE":
        return content, None
    first, _, rest = content.partition(b"\n")
    words = first.decode("utf-8", "replace").split()
    if OLD_PACKAGE not in words or NEW_PACKAGE in words:
        return content, None
    words = [NEW_PACKAGE if w == OLD_PACKAGE else w for w in words]
    return (" ".join(words) + "\n").encode() + rest, f"UPGRADE: {OLD_PACKAGE} replaced by {NEW_PACKAGE}"
