"""Carrying out action plans: the client's hands.

An `Applier` runs one `Plan` (a sequence of model actions) and says whether
it worked. The core never sees how; tests and `client --dry-run` use
`DryRun`, which only logs each step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Protocol

from pistop_mdns.model import Plan

log = logging.getLogger(__name__)

# Sends this client's state ("up"/"down") to its server; False when it could not.
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


def describe_action(action) -> str:
    fields = ", ".join(f"{k}={v!r}" for k, v in vars(action).items() if k not in ("required", "env"))
    return f"{type(action).__name__}({fields})"


class DryRun:
    """Logs each step of a plan and runs nothing (`client --dry-run`)."""

    def __init__(self, hostname: str):
        self.hostname = hostname

    def run_plan(self, plan: Plan, report: Reporter) -> PlanResult:
        for i, action in enumerate(plan.actions, 1):
            log.info("%s: plan %d step %d/%d: %s", self.hostname, plan.id, i, len(plan.actions),
                     describe_action(action))
            if type(action).__name__ == "ReportState":
                report(action.state)
        return PlanResult(True, "dry run")

    def probe(self) -> Facts:
        return Facts()
