"""`pistop-mdns server`: advertise the music server and keep its clients informed.

Registers `<instance>._pistop._tcp.local.` with the TXT fields derived from
this host's configuration, runs the liveness channel on the advertised port,
follows address changes, and on SIGTERM/SIGINT tells clients why it stops
(TXT state and a channel notice), then withdraws the record (goodbye
packets) and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time

from pistop_mdns import SERVICE_TYPE, __version__, auth, channel, commands, files, mdns, statefile, txt
from pistop_mdns.config import SOURCE_DEFAULT, Config
from pistop_mdns.executor import Runner
from pistop_mdns.model import STATE_POWEROFF, STATE_RESTART, STATE_STOPPING, STATE_UP
from pistop_mdns.services import SYSTEMD_MARKER

log = logging.getLogger(__name__)

ADDRESS_POLL = 2.0
# A stop announced through the control socket (by `pistop-mdns shutdown`) that
# has not ended this process after this long failed: the server is up again.
REVERT_AFTER = 600.0
SHUTDOWN_TARGETS = ("poweroff.target", "halt.target", "shutdown.target")
BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str:
    try:
        with open(BOOT_ID_FILE) as f:
            return f.read().strip()
    except OSError:
        return ""


def own_unit() -> str | None:
    """The systemd unit this process runs in, from its cgroup path."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                last = line.strip().rsplit("/", 1)[-1]
                if last.endswith(".service"):
                    return last
    except OSError:
        pass
    return None


def parse_jobs(text: str) -> list[tuple[str, str]]:
    """(unit, job type) pairs from `systemctl list-jobs --no-legend --plain`."""
    jobs = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit():
            jobs.append((parts[1], parts[2]))
    return jobs


def stop_reason_from(jobs: list[tuple[str, str]], system_state: str, unit: str | None) -> str:
    """Why we are being stopped, from the service manager's queued jobs (pure)."""
    if any(u == "reboot.target" and t == "start" for u, t in jobs):
        return STATE_STOPPING  # back in a minute, but the share goes away meanwhile
    if any(u in SHUTDOWN_TARGETS and t == "start" for u, t in jobs):
        return STATE_POWEROFF
    if unit and any(u == unit and t in ("restart", "try-restart", "reload-or-restart") for u, t in jobs):
        return STATE_RESTART
    if system_state == "stopping":
        return STATE_POWEROFF
    return STATE_STOPPING


def detect_stop_reason(runner: Runner) -> str:
    if not os.path.isdir(SYSTEMD_MARKER):
        return STATE_STOPPING
    jobs = runner.run(commands.systemctl_list_jobs(), timeout=2)
    running = runner.run(commands.systemctl_is_system_running(), timeout=2)
    return stop_reason_from(parse_jobs(jobs.out if jobs.ok else ""), running.out.strip(), own_unit())


def backup_at_start(cfg: Config) -> tuple[bool, str | None]:
    """Back up at start when [backup] paths are set, as pistop's fserver did, unless
    backup_at_start = false; and what to warn about when it was asked for with nothing to copy."""
    if not cfg.server.backup_at_start:
        return False, None
    if cfg.backup.paths:
        return True, None
    source = cfg.sources[("server", "backup_at_start")]
    if source == SOURCE_DEFAULT:
        return False, None
    return False, f"backup_at_start is true ({source}) but [backup] paths is empty: nothing to back up"


def ad_fields(cfg: Config, state: str, boot: str) -> dict[str, str]:
    s = cfg.server
    return {
        "export": s.export,
        "nfsvers": s.nfsvers,
        "mpd_port": str(s.mpd_port),
        "music": s.music,
        "state": state,
        "boot": boot,
        "ver": __version__,
    }


class Server:
    def __init__(self, cfg: Config, runner: Runner, *, config_args: list[str], shutdown_flags: list[str] = ()):
        self.cfg = cfg
        self.runner = runner
        # How to call our own CLI with the same configuration: the global
        # options, and the command-line flags `shutdown` takes too.
        self.config_args = config_args
        self.shutdown_flags = list(shutdown_flags)
        self.key = auth.configured_key(cfg)
        self.ipv6 = cfg.general.ip_version == "all"
        self.boot = boot_id()
        self.state = STATE_UP
        self.name = ""
        self.advertiser = mdns.Advertiser(cfg.general.hostname, self.ipv6)
        self.listener = channel.Listener(cfg.server.instance, self.key, cfg.server.heartbeat,
                                         on_command=self._command, on_change=self._write_state, boot=self.boot,
                                         record=lambda: self._txt)
        self._revert: asyncio.Task | None = None
        self._signed_at = self._last_signed()
        self._txt: dict[str, str] = {}  # what the record says now
        self.stop = asyncio.Event()
        self.since = time.time()

    def _properties(self) -> dict[str, str]:
        # Boards ignore a signed record older than one they have seen (a
        # replay): every new signature is at least a second after the last.
        self._signed_at = max(int(time.time()), self._signed_at + 1)
        self._keep_signed()
        self._txt = txt.encode(ad_fields(self.cfg, self.state, self.boot),
                          instance=txt.instance_of(self.name or f"{self.cfg.server.instance}.{SERVICE_TYPE}"),
                          key=self.key, now=self._signed_at, port=self.cfg.server.port,
                          addresses=self.advertiser.addresses, host=f"{self.cfg.general.hostname}.local.")
        return self._txt

    # Two signatures in one second put the counter ahead of the clock, so a
    # server started again at once could sign its first record no later than
    # the last one of its previous run (a `stopping` a host may have captured).
    # The counter is kept in the state directory and carries on from there.

    def _signed_path(self) -> str:
        return os.path.join(self.cfg.general.state_dir, "server.signed-at")

    def _last_signed(self) -> int:
        if self.key is None:
            return 0
        try:
            with open(self._signed_path()) as f:
                return max(0, int(f.read().strip()))
        except (OSError, ValueError):
            return 0  # none yet, or unreadable: the clock alone (the board also rejects an earlier boot)

    def _keep_signed(self) -> None:
        if self.key is None:
            return
        try:
            os.makedirs(self.cfg.general.state_dir, exist_ok=True)
            files.atomic_write(self._signed_path(), f"{self._signed_at}\n", backup_suffix=None)
        except OSError as e:
            log.debug("cannot keep the signature time in %s: %s", self._signed_path(), e.strerror)

    def _addresses(self) -> list[str]:
        return [i.address for i in mdns.local_interfaces(self.cfg.general.interfaces, self.ipv6)]

    def _write_state(self) -> None:
        try:
            statefile.write(self.cfg.general.state_dir, "server", {
                "role": "server", "name": self.name, "instance": txt.instance_of(self.name),
                "addresses": self.advertiser.addresses, "port": self.cfg.server.port,
                "state": self.state, "since": self.since, "txt": self._txt if self.name else {},
                "clients": self.listener.client_list(), "keyed": self.key is not None,
            })
        except OSError as e:
            log.warning("cannot write the state file in %s: %s; fix: set general.state_dir",
                        self.cfg.general.state_dir, e.strerror)

    async def _wait_for_addresses(self) -> list[str]:
        warned = False
        while not self.stop.is_set():
            addrs = self._addresses()
            if addrs:
                return addrs
            if not warned:
                names = ", ".join(self.cfg.general.interfaces) or "any interface"
                log.warning("no IPv4 address on %s yet; waiting for the network", names)
                warned = True
            try:
                await asyncio.wait_for(self.stop.wait(), ADDRESS_POLL)
            except asyncio.TimeoutError:
                pass
        return []

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        addrs = await self._wait_for_addresses()
        if not addrs:
            return 0
        try:
            await self.listener.start(self.cfg.server.port)
        except OSError as e:
            log.error("cannot listen on TCP port %d: %s; fix: set another [server] port",
                      self.cfg.server.port, e.strerror)
            return 1
        await self.advertiser.start(addrs)
        self._properties()  # the record boards that dial us directly get in the hello
        # Up before the registration, which takes a second: a board may come up
        # (and `pistop-mdns shutdown` be called) while it is still announcing.
        control = await self._control_socket()
        try:
            self.name = await self.advertiser.register(
                SERVICE_TYPE, self.cfg.server.instance, self.cfg.server.port, self._properties())
            self.listener.name = txt.instance_of(self.name)
            if self.state != STATE_UP or (self.key is not None and
                                          txt.instance_of(self.name) != self.cfg.server.instance):
                # Announced over the control socket while registering, or
                # renamed: the MAC covers the instance name, so sign again.
                await self.advertiser.update(self.name, self._properties())
            s = self.cfg.server
            log.info("%s: advertising %s on %s port %d: export %s%s, mpd port %d%s", self.cfg.general.hostname,
                     self.name, ", ".join(addrs), s.port, s.export, f" (music {s.music})" if s.music else "",
                     s.mpd_port, ", signed" if self.key else "")
            if s.advertise_rsync:
                await self.advertiser.register("_rsync._tcp.local.", s.instance, s.rsync_port, {})
            self._write_state()
            statefile.sd_notify("READY=1\nSTATUS=advertising " + self.name)
            backup, why_not = backup_at_start(self.cfg)
            if backup:
                asyncio.ensure_future(self._backup())
            elif why_not:
                log.warning("%s: %s", self.cfg.general.hostname, why_not)
            await self._notify("PowerOn")
            await self._watch(addrs)
            await self._announce(await self._final_reason())
        finally:
            if self._revert is not None:
                self._revert.cancel()
            if control is not None:
                control.close()
            await self.advertiser.close()
            await self.listener.close()
            statefile.remove(self.cfg.general.state_dir, "server")
        log.info("%s: withdrew %s (goodbye sent)", self.cfg.general.hostname, self.name)
        return 0

    async def _backup(self) -> None:
        """pistop's fserver backed up at start; in a thread, so advertising goes on."""
        from pistop_mdns import backup

        try:
            await asyncio.to_thread(backup.run_backup, self.cfg, self.runner,
                                    default_dest=self.cfg.shutdown.data_disk or self.cfg.server.export)
        except Exception as e:  # a backup problem must not take the server down
            log.warning("%s: backup at start failed: %s", self.cfg.general.hostname, e)

    async def _final_reason(self) -> str:
        """Why this server stops: as announced, or as the service manager's jobs say.
        Asking systemctl may take seconds; the event loop (heartbeats) goes on meanwhile."""
        return self.listener.notice or await asyncio.to_thread(self._stop_reason)

    async def _notify(self, message: str) -> None:
        """pistop's fserver told the LCD and the desktop "PowerOn"; a notifier never delays us for long."""
        from pistop_mdns.notify import Notifier

        try:
            said = await asyncio.to_thread(Notifier(self.cfg).send, message)
            log.info("%s: %s", self.cfg.general.hostname, said)
        except Exception as e:  # a notification is a courtesy, never a reason to stop
            log.warning("%s: notifying %s failed: %s", self.cfg.general.hostname, message, e)

    def _stop_reason(self) -> str:
        configured = self.cfg.server.stop_reason
        return detect_stop_reason(self.runner) if configured == "auto" else configured

    async def _announce(self, reason: str) -> None:
        """Tell clients why we stop: over the channel first, then in TXT."""
        if self.state == reason:
            return
        log.info("%s: stopping (%s): telling %d client(s)", self.cfg.general.hostname, reason,
                 len(self.listener.clients))
        self.state = reason
        await self.listener.announce(reason)
        if self.name:  # else the registration is still under way: see run()
            await self.advertiser.update(self.name, self._properties())
        self._write_state()
        if reason == STATE_POWEROFF:
            await self._notify("PowerOff")

    async def _watch(self, addrs: list[str]) -> None:
        # With a key the TXT carries a timestamp clients check; refresh it well
        # before it grows older than their allowed clock skew.
        refresh = 150.0
        last_refresh = time.monotonic()
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), ADDRESS_POLL)
                break
            except asyncio.TimeoutError:
                pass
            now_addrs = self._addresses()
            if now_addrs and sorted(now_addrs) != sorted(addrs):
                log.info("%s: addresses changed %s -> %s; re-announcing", self.cfg.general.hostname,
                         ", ".join(addrs), ", ".join(now_addrs))
                addrs = now_addrs
                await self.advertiser.readdress(addrs)
                if self.key is not None:  # the signature covers the addresses
                    await self.advertiser.update(self.name, self._properties())
                self._write_state()
            if self.key is not None and time.monotonic() - last_refresh > refresh:
                last_refresh = time.monotonic()
                await self.advertiser.update(self.name, self._properties())

    async def _control_socket(self):
        """A root-only unix socket for `pistop-mdns shutdown` on this host."""
        path = os.path.join(self.cfg.general.state_dir, "server.sock")
        try:
            os.makedirs(self.cfg.general.state_dir, exist_ok=True)
            if os.path.exists(path):
                os.unlink(path)
            old = os.umask(0o177)
            try:
                return await asyncio.start_unix_server(self._control, path)
            finally:
                os.umask(old)
        except OSError as e:
            log.warning("no control socket at %s (%s): `pistop-mdns shutdown` cannot reach this server",
                        path, e.strerror)
            return None

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            msg = await channel.read_message(reader, 5)
            if msg.get("t") == "announce" and msg.get("reason") in (STATE_POWEROFF, STATE_RESTART, STATE_STOPPING):
                told = [c.name for c in self.listener.clients.values()]
                await self._announce(msg["reason"])
                if self._revert is None:
                    self._revert = asyncio.ensure_future(self._revert_later())
                wait = float(msg.get("wait", 30))
                deadline = time.monotonic() + wait
                still = await self.listener.wait_clients_down(wait)
                # A board that powers off is off before this host goes (its
                # shutdown runs on while this one's would): wait for that too.
                off, on = await self.listener.wait_clients_off(max(0.0, deadline - time.monotonic()))
                result = {"t": "result", "ok": not still and not on, "still_up": [c.name for c in still],
                          "still_on": on, "told": told, "off": off}
            elif msg.get("t") == "announce" and msg.get("reason") == STATE_UP:
                await self._back_up("the shutdown helper says the power-off failed")
                result = {"t": "result", "ok": True}
            else:
                result = {"t": "result", "ok": False, "msg": "unknown request"}
            writer.write(json.dumps(result).encode() + b"\n")
            await writer.drain()
        except (channel.ChannelError, OSError, ValueError) as e:
            log.warning("control socket: %s", e)
        finally:
            writer.close()

    async def _revert_later(self) -> None:
        await asyncio.sleep(REVERT_AFTER)
        await self._back_up(f"still running {REVERT_AFTER:g} s after announcing {self.state}")

    async def _back_up(self, why: str) -> None:
        """A shutdown that was announced did not happen: say so, and advertise afresh.

        Boards that tore down only see a server come back when its record
        comes back, so the record is withdrawn and registered again.
        """
        if self._revert is not None and self._revert is not asyncio.current_task():
            self._revert.cancel()
        self._revert = None
        if self.state == STATE_UP or self.stop.is_set():
            return
        log.warning("%s: %s; up again", self.cfg.general.hostname, why)
        self.state = STATE_UP
        await self.listener.announce(None)
        if self.name:
            await self.advertiser.withdraw()
            self.name = await self.advertiser.register(
                SERVICE_TYPE, self.cfg.server.instance, self.cfg.server.port, self._properties())
            self.listener.name = txt.instance_of(self.name)
        self._write_state()

    async def _command(self, cmd: str, args: list[str], client: channel.ClientInfo) -> tuple[bool, str]:
        from pistop_mdns.actions.shutdown import SAFE_ARG

        if cmd != "shutdown":
            return False, f"unknown command {cmd!r}"
        if not all(SAFE_ARG.match(a) for a in args) or len(args) > 4:
            return False, "arguments refused: only plain shutdown(8) options"
        argv = [sys.executable, "-m", "pistop_mdns", *self.config_args, "shutdown", *self.shutdown_flags,
                "--", *args]
        log.info("%s: client %s asked for shutdown: running %s", self.cfg.general.hostname, client.name,
                 " ".join(argv))
        subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL)
        return True, "shutdown started"


def run(cfg: Config, *, config_args: list[str], shutdown_flags: list[str] = ()) -> int:
    runner = Runner(timeout=cfg.general.timeout)
    return asyncio.run(Server(cfg, runner, config_args=config_args, shutdown_flags=shutdown_flags).run())
