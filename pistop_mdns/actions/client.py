"""`pistop-mdns client`: follow a music server and set this board up for it.

The runtime loop: the mDNS browser, the liveness channel, a timer and the
executor all put events on one queue; each event goes through the pure
`core.step`, whose plan (if any) runs in a worker thread, one at a time. Its
result comes back as a `PlanFinished` event. The state file for `status` is
rewritten after every event that changed something.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time

from pistop_mdns import auth, channel, config, core, fresh, mdns, statefile, txt
from pistop_mdns.apply import Applier, DryRun, Facts
from pistop_mdns.config import Config
from pistop_mdns.model import (
    ChannelLost,
    ChannelUp,
    Heartbeat,
    PlanFinished,
    ServerGone,
    ServerNotice,
    ServerSeen,
    Started,
    StopRequested,
    Tick,
)

log = logging.getLogger(__name__)

ADDRESS_POLL = 5.0


def settings(cfg: Config, networks: tuple[str, ...], keyed: bool) -> core.Settings:
    c = cfg.client
    return core.Settings(
        hostname=cfg.general.hostname,
        pins=tuple(c.server),
        mount_mode=c.mount_mode,
        mountpoint=c.mountpoint or "",
        mount_fstype=c.mount_fstype,
        mount_options=c.mount_options,
        mount_source=c.mount_source,
        autofs_location=c.autofs_location,
        ready_marker=c.ready_marker,
        power_off=c.power_off,
        force_umount=c.force_umount,
        poweroff_on_crash=c.poweroff_on_crash,
        keyed=keyed,
        gone_hold=c.gone_hold,
        restart_grace=c.restart_grace,
        dead_time=c.dead_time,
        flap_window=c.flap_window,
        flap_settle=c.flap_settle,
        startup_wait=c.startup_wait,
        teardown_on_exit=c.teardown_on_exit,
        backup=c.backup_after_bringup and bool(cfg.backup.paths),
        local_networks=networks,
        prefer_ipv6=c.prefer_ipv6,
        set_music_directory=c.set_music_directory,
    )


class Client:
    def __init__(self, cfg: Config, applier: Applier, key: bytes | None):
        self.cfg = cfg
        self.applier = applier
        self.key = key
        self.ipv6 = cfg.general.ip_version == "all"
        self.queue: asyncio.Queue = asyncio.Queue()
        self.state = core.State()
        self.settings = settings(cfg, (), key is not None)
        self.facts = Facts()
        self.following_since: float | None = None
        self.follower = channel.Follower(
            cfg.general.hostname, key, cfg.client.heartbeat,
            on_up=lambda n, address, boot: self._put(ChannelUp(time.monotonic(), n, address, boot)),
            on_heartbeat=lambda n: self._put(Heartbeat(time.monotonic(), n)),
            on_lost=self._on_lost,
            on_notice=lambda n, r, a: self._put(ServerNotice(time.monotonic(), n, r, a)),
            on_hello=self._on_static_hello,
        )
        self.browser = mdns.Browser(self._on_browse, key=key, ipv6=self.ipv6,
                                    max_skew=cfg.general.max_clock_skew)
        self.static = [config.endpoint(e) for e in cfg.client.static_servers]
        self.loop: asyncio.AbstractEventLoop | None = None

    def _put(self, event) -> None:
        self.queue.put_nowait(event)

    def _on_browse(self, event: mdns.BrowseEvent) -> None:
        now = time.monotonic()
        if isinstance(event, mdns.Found):
            self._put(ServerSeen(now, event.ad, event.added))
            if event.added:
                self.follower.nudge(event.ad.name)  # back: try its channel now, not after the back-off
        elif isinstance(event, mdns.Lost):
            self._put(ServerGone(now, event.name))

    def _on_static_hello(self, name: str, address: str, port: int, hello: channel.ServerHello,
                         dialled: str) -> None:
        """A static server's hello: its record goes through the same checks as one from mDNS."""
        host = dialled if txt.is_host_name(dialled) else f"{hello.name}.local."
        self.browser.report_from_channel(name, hello.record or {}, address, port, host)

    def _on_lost(self, name: str) -> None:
        if self.follower.connected(name):
            return  # another link (static, or found over mDNS) still reaches it
        self._put(ChannelLost(time.monotonic(), name))
        self.browser.channel_lost(name)

    def _interfaces(self) -> list[mdns.Interface]:
        return mdns.local_interfaces(self.cfg.general.interfaces, self.ipv6)

    async def run(self) -> int:
        self.loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, lambda: self._put(StopRequested(time.monotonic())))
        if self.key is None:
            log.warning("%s: no key (general.key_file): anyone on the LAN can make this board mount "
                        "their share and point mpd at their host, or unmount%s; fix: pistop-mdns keygen",
                        self.cfg.general.hostname, " and power off" if self.cfg.client.power_off else "")
        interfaces = await self._wait_for_interfaces()
        if interfaces is None:
            return 0
        self.settings = dataclasses.replace(self.settings,
                                            local_networks=tuple(i.network for i in interfaces))
        facts = await asyncio.to_thread(self.applier.probe)
        self.facts = facts
        # In mpd mode nothing is mounted; an mpd left running counts as "set up".
        in_use = facts.mounted if facts.mounted is not None else facts.mpd_running
        self._put(Started(time.monotonic(), mounted=bool(in_use)))
        await self.browser.start([i.address for i in interfaces])
        self.follower.follow_static(self.static)
        statefile.sd_notify("READY=1\nSTATUS=browsing for _pistop._tcp")
        watcher = asyncio.ensure_future(self._watch_addresses(interfaces))
        try:
            await self._loop()
        finally:
            watcher.cancel()
            await self.browser.close()
            await self.follower.close()
            statefile.remove(self.cfg.general.state_dir, "client")
        return 0

    async def _wait_for_interfaces(self) -> list[mdns.Interface] | None:
        warned = False
        while True:
            interfaces = self._interfaces()
            if interfaces:
                return interfaces
            if not warned:
                log.warning("no IPv4 address yet; waiting for the network")
                warned = True
            try:
                event = await asyncio.wait_for(self.queue.get(), ADDRESS_POLL)
                if isinstance(event, StopRequested):
                    return None
            except asyncio.TimeoutError:
                pass

    async def _watch_addresses(self, interfaces: list[mdns.Interface]) -> None:
        known = sorted(i.address for i in interfaces)
        while True:
            await asyncio.sleep(ADDRESS_POLL)
            now = self._interfaces()
            addrs = sorted(i.address for i in now)
            if addrs and addrs != known:
                log.info("%s: addresses changed %s -> %s; browsing again", self.cfg.general.hostname,
                         ", ".join(known), ", ".join(addrs))
                known = addrs
                self.settings = dataclasses.replace(self.settings,
                                                    local_networks=tuple(i.network for i in now))
                await self.browser.restart(addrs)

    async def _loop(self) -> None:
        while self.state.phase != core.EXITED:
            deadline = core.next_deadline(self.state, self.settings)
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic()) + 0.01
            try:
                event = await asyncio.wait_for(self.queue.get(), timeout)
            except asyncio.TimeoutError:
                event = Tick(time.monotonic())
            before = self.state
            self.state, plan, notes = core.step(self.state, event, self.settings)
            for note in notes:
                log.info("%s", note)
            self._steer_channel()
            if plan is not None:
                asyncio.ensure_future(self._execute(plan))
            if self._visible(before) != self._visible(self.state):
                self._write_state()
            if self.state.phase == core.POWERING_OFF and self.state.busy is None:
                log.info("%s: powering off; the client stops here", self.cfg.general.hostname)
                break

    def _steer_channel(self) -> None:
        if self.state.following is None:
            self.following_since = None
        elif self.following_since is None:
            self.following_since = time.time()
        self.follower.follow(core.channel_targets(self.state, self.settings))

    async def _execute(self, plan) -> None:
        loop = asyncio.get_running_loop()

        def report(state: str) -> bool:
            if plan.server is None:
                return False
            future = asyncio.run_coroutine_threadsafe(self.follower.report(plan.server.name, state), loop)
            try:
                return future.result(timeout=3)
            except Exception:  # a report is best effort: the server may be gone
                return False

        try:
            result = await asyncio.to_thread(self.applier.run_plan, plan, report)
            ok, detail = result.ok, result.detail
            self.facts = await asyncio.to_thread(self.applier.probe)
        except Exception as e:  # a bug in an adapter must not kill the client
            log.exception("%s: plan %d crashed", self.cfg.general.hostname, plan.id)
            ok, detail = False, f"internal error: {e}"
        self._put(PlanFinished(time.monotonic(), plan.id, ok, detail))

    @staticmethod
    def _visible(state: core.State) -> tuple:
        following = state.servers.get(state.following) if state.following else None
        return (state.phase, state.applied, state.busy, state.last_result,
                following.channel if following else None,
                tuple(sorted(n for n, k in state.servers.items() if k.record)))

    def _write_state(self) -> None:
        st = self.state
        following = st.servers.get(st.following) if st.following else None
        try:
            statefile.write(self.cfg.general.state_dir, "client", {
                "role": "client",
                "hostname": self.cfg.general.hostname,
                "phase": st.phase,
                "mount_mode": self.settings.mount_mode,
                "mountpoint": self.settings.mountpoint,
                "server": None if following is None or st.applied is None else {
                    "name": following.ad.name, "instance": following.ad.instance,
                    "address": st.applied.address,
                    "export": following.ad.export, "mpd_port": following.ad.mpd_port,
                    "channel": following.channel,
                    "status": type(following.life).__name__.lower(),
                },
                "since": self.following_since,
                "mounted": self.facts.mounted,
                "mpd_running": self.facts.mpd_running,
                "plan": None if st.busy is None else {"id": st.busy.id, "kind": st.busy.kind, "why": st.busy.why},
                "last_result": st.last_result,
                "servers_seen": sorted(k.ad.instance for k in st.servers.values() if k.record),
                "updated": time.time(),
            })
        except OSError as e:
            log.warning("cannot write the state file in %s: %s; fix: set general.state_dir",
                        self.cfg.general.state_dir, e.strerror)


def run(cfg: Config, *, dry_run: bool) -> int:
    status = fresh.prepare(cfg, dry_run=dry_run)
    if status:
        return status
    key = auth.configured_key(cfg)
    if dry_run:
        applier: Applier = DryRun(cfg.general.hostname)
    else:
        from pistop_mdns.machine import MachineApplier

        applier = MachineApplier(cfg)
    return asyncio.run(Client(cfg, applier, key).run())
