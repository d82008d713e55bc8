"""`pistop-mdns update`: upgrade [update] packages that have a newer version.

Run by the pistop-mdns-update timer (first 5 minutes after boot, then every
[update] interval). Exit status: 0 when every step worked (or nothing was to
be done), 1 when a step failed, 2 for a configuration mistake.
"""

from __future__ import annotations

import logging
from typing import Callable

from pistop_mdns import update
from pistop_mdns.config import Config
from pistop_mdns.executor import Runner

log = logging.getLogger(__name__)


def run(cfg: Config, *, dry_run: bool, echo: Callable[[str], None]) -> int:
    try:
        ok = update.run_update(cfg, Runner(cfg.general.timeout), dry_run=dry_run, echo=echo)
    except update.UpdateFailed as e:
        log.error("update: %s", e)
        return 1
    return 0 if ok else 1
