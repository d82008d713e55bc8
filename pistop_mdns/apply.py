"""Carrying out action plans: the client's hands.

An `Applier` runs one `Plan` (a sequence of model actions) and says whether
it worked. The core never sees how; tests and `client --dry-run` use
`DryRun`, which only logs each step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Protocol

from pistop_mdns.model import (
    Action,
    Backup,
    DisableAutofsEntry,
    EnsureAutofs,
    Mount,
    Notify,
    Plan,
    PointAutofs,
    PowerOff,
    ReportState,
    RunHook,
    SetMpdConf,
    StartMpd,
    StopService,
    Sync,
    Unmount,
    WaitReady,
)

log = logging.getLogger(__name__)

# Sends this client's state ("up", "down", or "off": down and powering off) to
# its server; False when it could not.
Reporter = Callable[[str], bool]


@dataclass(frozen=True)
class PlanResult:
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Facts:
    """What `status` shows about the machine, as the applier last saw it."""

    mounted: bool | None = None  # None: not applicable (mpd mode) or unknown
    mpd_running: bool | None = None


class Applier(Protocol):
    def run_plan(self, plan: Plan, report: Reporter) -> PlanResult: ...

    def probe(self) -> Facts: ...


def describe_action(action: Action) -> str:
    """A step in the words of the journal: "mount 198.18.0.11:/srv/music at /mnt/music (nfs4 ...)"."""
    match action:
        case RunHook(stage=stage):
            return f"run the {stage} hooks"
        case PointAutofs(location=location):
            return f"point the autofs map entry at {location}"
        case DisableAutofsEntry():
            return "take the share's entry out of the autofs map"
        case EnsureAutofs():
            return "start autofs (or reload its map)"
        case Mount(source=source, target=target, fstype=fstype, options=options):
            return f"mount {source} at {target} ({fstype}, {options})"
        case Unmount(target=target, lazy=lazy):
            return f"unmount {target}{' lazily' if lazy else ''}"
        case WaitReady(mountpoint=mp, marker=marker, nfs_url=url):
            where = url or mp
            return f"wait until {where} is ready" + (f" (has {marker})" if marker else "")
        case SetMpdConf(host=host, port=port, music_directory=music):
            return f"point mpd.conf's proxy at {host}:{port}" + (f", music_directory {music}" if music else "")
        case StartMpd():
            return "start mpd (restart it if mpd.conf changed)"
        case StopService(service=service, wait=wait):
            return f"stop {service}" if wait else f"ask {service} to stop (not waiting)"
        case Notify(message=message):
            return f"notify the LCD/desktop: {message}"
        case ReportState(state="off"):
            return "tell the server this board is down and powers off now"
        case ReportState(state=state):
            return f"tell the server this board is {state}"
        case Backup():
            return "back up the configured paths"
        case Sync():
            return "sync"
        case PowerOff():
            return "power off"
    return repr(action)


class DryRun:
    """Logs each step of a plan and runs nothing (`client --dry-run`)."""

    def __init__(self, hostname: str):
        self.hostname = hostname

    def run_plan(self, plan: Plan, report: Reporter) -> PlanResult:
        for i, action in enumerate(plan.actions, 1):
            log.info("%s: plan %d step %d/%d: would %s", self.hostname, plan.id, i, len(plan.actions),
                     describe_action(action))
            if isinstance(action, ReportState):
                report(action.state)
        return PlanResult(True, "dry run")

    def probe(self) -> Facts:
        return Facts()
