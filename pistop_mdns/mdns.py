"""The only module that talks to python-zeroconf (and netifaces).

- `local_interfaces()`: this host's usable interfaces and addresses.
- `Advertiser`: registers a service, updates it, withdraws it with goodbyes.
- `Browser`: browses `_pistop._tcp`, resolves records, validates their TXT
  and hands `Found` / `Lost` / `Rejected` to a callback in the event loop.

Works unchanged with Debian 12's zeroconf 0.47.3 and the newest release:
`server=` is always passed, received TXT bytes are decoded in txt.py,
handlers use the exact keyword names zeroconf calls them with, request
timeouts are in milliseconds, and no newer-only argument is used.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from ipaddress import ip_interface
from typing import Callable

import netifaces
from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from pistop_mdns import SERVICE_TYPE, txt
from pistop_mdns.model import ServerAd

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT_MS = 3000
# RFC 6762 10.2: records announced with the cache-flush bit make older ones
# expire one second later. Looking again after that sees the settled set.
SETTLE_SECONDS = 1.2
_IFF_UP = 0x1


@dataclass(frozen=True)
class Interface:
    name: str
    address: str
    network: str  # "198.18.0.12/24"


def _is_up(name: str) -> bool:
    try:
        with open(f"/sys/class/net/{name}/flags") as f:
            return bool(int(f.read().strip(), 16) & _IFF_UP)
    except (OSError, ValueError):
        return True  # no sysfs (another OS): trust that it has an address


def local_interfaces(names: list[str] | tuple[str, ...] = (), ipv6: bool = False) -> list[Interface]:
    """Addresses of the named interfaces, or of every interface that is up and
    not loopback. IPv6 link-local addresses are left out (they need a scope)."""
    found: list[Interface] = []
    for name in netifaces.interfaces():
        if names and name not in names:
            continue
        if not names and (name == "lo" or not _is_up(name)):
            continue
        addrs = netifaces.ifaddresses(name)
        for a in addrs.get(netifaces.AF_INET, []):
            if "addr" in a and not a["addr"].startswith("127."):
                mask = a.get("netmask", "255.255.255.255")
                found.append(Interface(name, a["addr"], str(ip_interface(f"{a['addr']}/{mask}").network)))
        if ipv6:
            for a in addrs.get(netifaces.AF_INET6, []):
                addr = a.get("addr", "").split("%")[0]
                if addr and not addr.startswith("fe80") and addr != "::1":
                    prefix = a.get("netmask", "/128").split("/")[-1]
                    prefix = prefix if prefix.isdigit() else "128"
                    found.append(Interface(name, addr, str(ip_interface(f"{addr}/{prefix}").network)))
    return found


def _zeroconf(addresses: list[str], ipv6: bool) -> AsyncZeroconf:
    return AsyncZeroconf(
        interfaces=addresses,
        ip_version=IPVersion.All if ipv6 else IPVersion.V4Only,
    )


# ---------------------------------------------------------------- advertising


class Advertiser:
    """One host's registrations: the `_pistop._tcp` service and optional extras."""

    def __init__(self, hostname: str, ipv6: bool = False):
        self.hostname = hostname
        self.ipv6 = ipv6
        self._zc: AsyncZeroconf | None = None
        self._infos: list[AsyncServiceInfo] = []
        self.addresses: list[str] = []

    def _info(self, type_: str, instance: str, port: int, properties: dict[str, str]) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            type_,
            f"{instance}.{type_}",
            port=port,
            properties=properties,
            server=f"{self.hostname}.local.",
            parsed_addresses=self.addresses,
        )

    async def start(self, addresses: list[str]) -> None:
        self.addresses = list(addresses)
        self._zc = _zeroconf(self.addresses, self.ipv6)

    async def register(self, type_: str, instance: str, port: int, properties: dict[str, str]) -> str:
        """Register a service; returns its name, renamed per RFC 6762 if taken."""
        assert self._zc is not None
        info = self._info(type_, instance, port, properties)
        wanted = info.name
        await (await self._zc.async_register_service(info, allow_name_change=True))
        if info.name != wanted:
            log.warning("the name %s is already taken on the LAN; advertising as %s",
                        txt.instance_of(wanted) if type_ == SERVICE_TYPE else wanted,
                        txt.instance_of(info.name) if type_ == SERVICE_TYPE else info.name)
        self._infos.append(info)
        return info.name

    async def update(self, name: str, properties: dict[str, str]) -> None:
        """Send changed TXT for `name` as an update of the same service."""
        assert self._zc is not None
        for i, old in enumerate(self._infos):
            if old.name == name:
                info = AsyncServiceInfo(old.type, old.name, port=old.port, properties=properties,
                                        server=old.server, parsed_addresses=self.addresses)
                self._infos[i] = info
                await (await self._zc.async_update_service(info))
                return
        raise KeyError(name)

    async def readdress(self, addresses: list[str]) -> None:
        """The host's addresses changed (DHCP): re-announce every service on them.

        zeroconf's sockets are bound to the old addresses, so a new instance is
        made. The old one is closed *without* goodbyes (they would make every
        client tear down); the new one announces the same names with the new
        address records, which replace the old ones in the clients' caches.
        """
        assert self._zc is not None
        old = self._zc
        for info in self._infos:
            old.zeroconf.registry.async_remove(info)
        await old.async_close()
        self.addresses = list(addresses)
        self._zc = _zeroconf(self.addresses, self.ipv6)
        infos, self._infos = self._infos, []
        for info in infos:
            fresh = AsyncServiceInfo(info.type, info.name, port=info.port, properties=info.properties,
                                     server=info.server, parsed_addresses=self.addresses)
            # Our own name: no probing against ourselves, announce right away.
            await (await self._zc.async_register_service(fresh, cooperating_responders=True))
            self._infos.append(fresh)

    async def withdraw(self) -> None:
        """Unregister everything: goodbye packets (TTL 0) go out now."""
        if self._zc is None:
            return
        for info in self._infos:
            await (await self._zc.async_unregister_service(info))
        self._infos = []

    async def close(self) -> None:
        if self._zc is not None:
            await self.withdraw()
            await self._zc.async_close()
            self._zc = None


# ---------------------------------------------------------------- browsing


@dataclass(frozen=True)
class Found:
    ad: ServerAd
    added: bool  # False: an update of a record already reported
    properties: dict[str, str]


@dataclass(frozen=True)
class Lost:
    name: str


BrowseEvent = Found | Lost | txt.Rejected


class Browser:
    """Browses `_pistop._tcp` and reports validated records to `on_event`.

    The zeroconf handler only starts a resolve task; `on_event` is called in
    the event loop and must not block. Each record name is warned about once
    while it stays invalid.
    """

    def __init__(
        self,
        on_event: Callable[[BrowseEvent], None],
        *,
        key: bytes | None = None,
        max_skew: float = 600.0,
        ipv6: bool = False,
        now: Callable[[], float] | None = None,
    ):
        self.on_event = on_event
        self.key = key
        self.max_skew = max_skew
        self.ipv6 = ipv6
        self.now = now or time.time
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: dict[str, asyncio.Task] = {}
        self._settle: dict[str, asyncio.Task] = {}
        self._last: dict[str, tuple] = {}  # what was last reported for each name
        self._newest: dict[str, tuple[int, str]] = {}  # with a key: (signature time, boot) of the newest record
        self._past_boots: dict[str, set[str]] = {}  # boots a newer boot has replaced: never back
        self._sources: dict[str, set[str]] = {}  # where each reported record is known from: mdns, channel
        self._warned: set[str] = set()

    async def start(self, addresses: list[str]) -> None:
        self._zc = _zeroconf(addresses, self.ipv6)
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])

    async def restart(self, addresses: list[str]) -> None:
        """New local addresses: browse again on them (records are re-reported)."""
        await self.close()
        await self.start(addresses)

    def _on_change(self, zeroconf, service_type, name, state_change) -> None:  # noqa: ARG002
        for tasks in (self._tasks, self._settle):
            old = tasks.pop(name, None)
            if old is not None:
                old.cancel()
        if state_change is ServiceStateChange.Removed:
            self._forget(name, "mdns")
            return
        self._sources.setdefault(name, set()).add("mdns")
        self._tasks[name] = asyncio.ensure_future(self._resolve(name, settled=False))
        if state_change is ServiceStateChange.Updated:
            self._settle[name] = asyncio.ensure_future(self._resolve(name, settled=True))

    async def _resolve(self, name: str, settled: bool) -> None:
        assert self._zc is not None
        if settled:
            await asyncio.sleep(SETTLE_SECONDS)
        try:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            resolved = await info.async_request(self._zc.zeroconf, RESOLVE_TIMEOUT_MS)
        except Exception as e:  # a name zeroconf itself refuses (control characters, bad length)
            (self._settle if settled else self._tasks).pop(name, None)
            self._reject(txt.Rejected(name, f"zeroconf cannot resolve this name ({type(e).__name__})"))
            return
        if not resolved:
            log.debug("could not resolve %s in %d ms", txt.escape(name), RESOLVE_TIMEOUT_MS)
            return
        (self._settle if settled else self._tasks).pop(name, None)
        addresses = info.parsed_addresses()
        last = self._last.get(name)
        if not settled and last is not None and last[0] == info.properties and last[2] == info.port \
                and set(addresses) > set(last[1]):
            # Only new addresses beside the old ones: most likely the old ones
            # are being flushed. The settled look reports the outcome.
            return
        self.report(name, info.properties or {}, addresses, info.port, info.server or "")

    def report(self, name: str, properties: dict, addresses: list[str], port: int, host: str) -> None:
        """Validate one resolved record and tell `on_event` (warning once per bad name).

        A record identical to the one last reported for the name is not reported again.
        """
        result = txt.parse(
            name,
            properties,
            addresses=addresses,
            port=port,
            host=host,
            key=self.key,
            now=self.now(),
            max_skew=self.max_skew,
            ipv6=self.ipv6,
        )
        if not isinstance(result, txt.Rejected) and result.authenticated:
            result = self._check_newer(name, properties, result)
        if isinstance(result, txt.Rejected):
            self._reject(result)
            return
        self._warned.discard(name)
        last = self._last.get(name)
        self._last[name] = (properties, sorted(addresses), port, host, result)
        if last is not None and last[4] == result:
            return  # e.g. only the (unsigned, unused) A records changed under a key
        props = {_text(k): _text(v) for k, v in properties.items()}
        self.on_event(Found(result, last is None, props))

    def _reject(self, rejected: txt.Rejected) -> None:
        """One warning per record name while it stays invalid, then silence."""
        if rejected.name not in self._warned:
            self._warned.add(rejected.name)
            log.warning("ignoring %s: %s", txt.escape(rejected.name), rejected.reason)
        self.on_event(rejected)

    def report_from_channel(self, name: str, properties: dict, address: str, port: int, host: str) -> None:
        """A record a server sent in its channel hello (a static server, reached without mDNS)."""
        self._sources.setdefault(name, set()).add("channel")
        self.report(name, properties, [address], port, host)

    def channel_lost(self, name: str) -> None:
        """The channel that brought `name`'s record is gone: without mDNS, so is the record."""
        self._forget(name, "channel")

    def _forget(self, name: str, source: str) -> None:
        sources = self._sources.get(name, set())
        sources.discard(source)
        if not sources and self._last.pop(name, None) is not None:
            self.on_event(Lost(name))

    def _check_newer(self, name: str, properties: dict, ad: ServerAd) -> ServerAd | txt.Rejected:
        """A signed record older than one already seen is a replay (or a stale cache): ignored.

        So is any record of a boot that a newer boot of the server has replaced:
        boot ids are random per start, so an earlier boot never speaks again, and
        its records (a captured `stopping`, say) cannot come back even when they
        were signed within the same second as the new boot's first record.
        """
        ts = txt.signed_at(properties)
        newest, current = self._newest.get(name, (None, None))
        past = self._past_boots.setdefault(name, set())
        if ad.boot in past:
            return txt.Rejected(name, f"signed by an earlier boot ({txt.escape(ad.boot)}) of a server that has "
                                      f"started again since: replayed by another host")
        if ts is None or newest is not None and ts < newest:
            return txt.Rejected(name, f"signed at {ts}, before the record already seen ({newest}): "
                                      f"replayed by another host, or the server's clock went back")
        if current is not None and current != ad.boot:
            past.add(current)
        self._newest[name] = (ts, ad.boot)
        return ad

    async def close(self) -> None:
        for tasks in (self._tasks, self._settle):
            for task in tasks.values():
                task.cancel()
            tasks.clear()
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        if self._zc is not None:
            await self._zc.async_close()
            self._zc = None


def _text(value: bytes | str | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""
