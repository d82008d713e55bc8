"""`pistop-mdns backup`: copy [backup] paths to DEST/backup/HOSTNAME/ with rsync.

Exit status: 0 when every path was copied, 1 when one failed or the backup
disk is not mounted, 2 when the configuration says nothing to back up or
where to.
"""

from __future__ import annotations

import logging
from typing import Callable

from pistop_mdns import backup, derive
from pistop_mdns.config import Config, ConfigError
from pistop_mdns.executor import Runner

log = logging.getLogger(__name__)


def default_dest(cfg: Config) -> str:
    """On a client, backups go to the share's mount point unless [backup] dest says otherwise."""
    if cfg.backup.dest:
        return ""
    try:
        return derive.client(cfg).client.mountpoint or ""
    except ConfigError:
        return ""


def run(cfg: Config, *, dry_run: bool, echo: Callable[[str], None]) -> int:
    if not cfg.backup.paths:
        log.error("nothing to back up: [backup] paths is empty; fix: set paths = [\"/etc/mpd.conf\", ...] "
                  "in [backup] (pistop's BACKUP)")
        return 2
    try:
        ok = backup.execute(cfg, Runner(cfg.general.timeout), default_dest=default_dest(cfg),
                            dry_run=dry_run, echo=echo)
    except backup.BackupRefused as e:
        log.error("backup refused: %s", e)
        return e.status
    except OSError as e:
        log.error("backup: %s: %s", e.filename or "", e.strerror)
        return 1
    return 0 if ok else 1
