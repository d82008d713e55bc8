"""`pistop-mdns browse`: which music servers does this machine see?

Prints a table (or `--json`) after `--timeout` seconds, or with `--watch`
one line per added/updated/removed event until interrupted. Records whose
TXT fails validation are left out, with one warning naming each.
Exit status 0 when at least one server was seen, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from typing import TextIO

from pistop_mdns import auth, mdns
from pistop_mdns.config import Config
from pistop_mdns.model import ServerAd

log = logging.getLogger(__name__)

COLUMNS = ("INSTANCE", "HOST", "ADDRESSES", "PORT", "STATE", "EXPORT", "MUSIC", "MPD", "VERSION", "OTHER TXT")


def as_dict(found: mdns.Found) -> dict:
    ad = found.ad
    return {
        "name": ad.name,
        "instance": ad.instance,
        "host": ad.host,
        "addresses": list(ad.addresses),
        "port": ad.port,
        "export": ad.export,
        "music": ad.music,
        "nfsvers": ad.nfsvers,
        "mpd_port": ad.mpd_port,
        "state": ad.state,
        "boot": ad.boot,
        "version": ad.version,
        "authenticated": ad.authenticated,
        "txt": found.properties,
    }


def _row(ad: ServerAd) -> tuple[str, ...]:
    other = " ".join(f"{k}={v}" for k, v in ad.extra)
    return (ad.instance, ad.host.rstrip("."), ",".join(ad.addresses), str(ad.port), ad.state,
            ad.export, ad.music or "-", str(ad.mpd_port), ad.version or "-", other or "-")


def table(found: list[mdns.Found]) -> str:
    rows = [COLUMNS] + [_row(f.ad) for f in sorted(found, key=lambda f: f.ad.instance.lower())]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


async def browse(cfg: Config, *, timeout: float | None, as_json: bool, watch: bool,
                 out: TextIO | None = None) -> int:
    out = out or sys.stdout
    ipv6 = cfg.general.ip_version == "all"
    addrs = [i.address for i in mdns.local_interfaces(cfg.general.interfaces, ipv6)]
    if not addrs:
        log.error("no network interface with an address%s; fix: check the network or --interfaces",
                  f" among {', '.join(cfg.general.interfaces)}" if cfg.general.interfaces else "")
        return 1
    key = auth.configured_key(cfg)
    seen: dict[str, mdns.Found] = {}
    ever = False

    def on_event(event: mdns.BrowseEvent) -> None:
        nonlocal ever
        if isinstance(event, mdns.Found):
            seen[event.ad.name] = event
            ever = True
            if watch:
                _emit(out, "added" if event.added else "updated", event, as_json)
        elif isinstance(event, mdns.Lost):
            gone = seen.pop(event.name, None)
            if watch and gone is not None:
                _emit(out, "removed", gone, as_json)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    browser = mdns.Browser(on_event, key=key, ipv6=ipv6, max_skew=cfg.general.max_clock_skew)
    await browser.start(addrs)
    try:
        await asyncio.wait_for(stop.wait(), timeout)
    except asyncio.TimeoutError:
        pass
    finally:
        await browser.close()
    if not watch:
        found = list(seen.values())
        if as_json:
            out.write(json.dumps([as_dict(f) for f in found], indent=1) + "\n")
        elif found:
            out.write(table(found) + "\n")
        else:
            log.info("no pistop server found in %g s", timeout)
    out.flush()
    return 0 if (seen if not watch else ever) else 1


def _emit(out: TextIO, what: str, found: mdns.Found, as_json: bool) -> None:
    if as_json:
        out.write(json.dumps({"event": what, **as_dict(found)}) + "\n")
    else:
        ad = found.ad
        out.write(f"{what:8} {ad.instance} {','.join(ad.addresses)}:{ad.port} state={ad.state} "
                  f"export={ad.export} mpd_port={ad.mpd_port}\n")
    out.flush()


def run(cfg: Config, *, timeout: float | None, as_json: bool, watch: bool) -> int:
    return asyncio.run(browse(cfg, timeout=timeout, as_json=as_json, watch=watch))
