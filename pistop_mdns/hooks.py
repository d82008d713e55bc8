"""The user's own scripts around mounting and unmounting.

An executable named `pre_mount`, `post_mount`, `pre_unmount` or
`post_unmount` in any of `client.hooks_dirs` (default
/etc/pistop-mdns/hooks and ~/.pistop, where pistop users keep theirs) runs
at that point of a bring-up or tear-down, directories in configured order.
Its environment describes the server (PISTOP_SERVER, PISTOP_HOST,
PISTOP_ADDRESS, PISTOP_EXPORT, PISTOP_MPD_PORT, PISTOP_MUSIC), why it runs
(PISTOP_REASON, a keyword: bring-up, retarget, poweroff, restart, stopping,
silent, gone, exit; PISTOP_REASON_TEXT, the journal's sentence) and
PISTOP_EVENT, the stage. A hook that fails or outlives
`client.hook_timeout` is one warning in the log, never a reason to stop: the
music matters more than a hook.
"""

from __future__ import annotations

import logging
import os
import stat
from typing import Sequence

from pistop_mdns.config import Config
from pistop_mdns.executor import Runner

log = logging.getLogger(__name__)


def hook_paths(dirs: Sequence[str], stage: str, home: str | None) -> list[str]:
    """Where a `stage` hook may be, in order; `~` is the process's HOME."""
    paths = []
    for directory in dirs:
        if home and (directory == "~" or directory.startswith("~/")):
            directory = home + directory[1:]
        path = os.path.join(directory, stage)
        if path not in paths:
            paths.append(path)
    return paths


class Hooks:
    def __init__(self, cfg: Config, runner: Runner):
        self.cfg = cfg
        self.runner = runner
        self.hostname = cfg.general.hostname
        self._warned: set[str] = set()  # files already reported as not executable

    def run(self, stage: str, env: Sequence[tuple[str, str]]) -> str:
        """Run every `stage` hook; return what was done, for the step's log line."""
        paths = hook_paths(self.cfg.client.hooks_dirs, stage, os.environ.get("HOME"))
        ran = []
        for path in paths:
            if not self._runnable(path):
                continue
            result = self.runner.run([path], timeout=self.cfg.client.hook_timeout,
                                     env={**dict(env), "PISTOP_EVENT": stage})
            for line in (result.out + result.err).splitlines():
                log.debug("%s: hook %s: %s", self.hostname, path, line)
            if result.ok:
                ran.append(path)
            else:
                log.warning("%s: hook %s failed: %s; carrying on", self.hostname, path, result.summary())
                ran.append(f"{path} (failed)")
        if ran:
            return "ran " + ", ".join(ran)
        return "none in " + ", ".join(os.path.dirname(p) for p in paths)

    def _runnable(self, path: str) -> bool:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            self._warn_once(path, f"cannot look at hook {path}: {e.strerror}; fix: check the directory's permissions")
            return False
        if not stat.S_ISREG(st.st_mode):
            self._warn_once(path, f"hook {path} is not a file; skipped")
            return False
        if not os.access(path, os.X_OK):
            self._warn_once(path, f"hook {path} is not executable; skipped (fix: chmod +x {path})")
            return False
        return True

    def _warn_once(self, path: str, message: str) -> None:
        if path not in self._warned:
            self._warned.add(path)
            log.warning("%s: %s", self.hostname, message)
