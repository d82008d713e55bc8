"""TXT records (RFC 6763 section 6) <-> ServerAd, with strict validation.

`parse` takes whatever arrived from the network (keys and values as bytes or
str, values possibly None) and returns either a `ServerAd` or a `Rejected`
that says why, in words for one log line. It never raises: a record that
fails validation is never acted on.

Keys (protocol 1): txtvers, proto, export, nfsvers, mpd_port, music, state,
boot, ver; with a key also addrs (the server's addresses), ts (unix time) and
host (the server's host name) and mac (HMAC-SHA256 over the instance name, the
SRV port and every other key, see auth.py). With a key the A/AAAA records and
the SRV target are not used at all: anyone can send those, so the board uses
the signed `addrs` and `host` only.

Names from the network may hold any UTF-8 (RFC 6763 4.1.1): instance names
and unknown TXT values are escaped (`escape`) before they reach a log line,
a hook's environment or a terminal, and the SRV target must be a plain host
name, since it may end up in a mount source.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Mapping

from pistop_mdns import PROTOCOL, SERVICE_TYPE, auth
from pistop_mdns.model import SERVER_STATES, ServerAd

TXTVERS = "1"
# RFC 6763 6.2: a TXT record should stay well under 1300 bytes to fit one
# packet; ours is about 250. Anything bigger is not ours.
MAX_TXT_BYTES = 1300
NFS_VERSIONS = ("3", "4", "4.0", "4.1", "4.2")

# Paths end up in mount(8) and autofs map lines and in mpd.conf: no white
# space, no quotes, no option-looking or parent-directory tricks.
_SAFE_PATH = re.compile(r"[A-Za-z0-9._@+,:=~/-]*\Z")
_BOOT = re.compile(r"[A-Za-z0-9-]{0,64}\Z")
_VERSION = re.compile(r"[A-Za-z0-9.+~_-]{0,32}\Z")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,16}\Z")


@dataclass(frozen=True)
class Rejected:
    name: str
    reason: str


def instance_of(name: str) -> str:
    suffix = "." + SERVICE_TYPE
    return name[: -len(suffix)] if name.endswith(suffix) else name


def is_host_name(text: str) -> bool:
    """Letters, digits and hyphens in dot-separated labels: safe in a mount source."""
    return bool(_HOST.match(text if text.endswith(".") else text + "."))


def escape(text: str) -> str:
    """`text` with everything a terminal, a log or an environment would act on
    (control characters, bidi overrides, other non-printables) as \\x.. / \\u.... escapes."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)


def _mac_parts(instance: str, port: int, fields: Mapping[str, str]) -> tuple[str, ...]:
    canonical = "\n".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "mac")
    return ("pistop-mdns txt 1", instance, str(port), canonical)


def encode(fields: Mapping[str, str], *, instance: str, key: bytes | None, now: float, port: int = 0,
           addresses: list[str] | tuple[str, ...] = (), host: str = "") -> dict[str, str]:
    """The TXT properties for `fields`; with a key, stamped with `now` and MACed
    together with the instance name, the SRV port, the host name and the addresses."""
    out = {"txtvers": TXTVERS, "proto": str(PROTOCOL)}
    out.update({k: str(v) for k, v in fields.items()})
    if key is not None:
        out["addrs"] = ",".join(addresses)
        if host:
            out["host"] = host
        out["ts"] = str(int(now))
        out["mac"] = auth.mac(key, *_mac_parts(instance, port, out))
    return out


def signed_at(properties: Mapping[Any, Any]) -> int | None:
    """The `ts` of an (already validated) record, for telling newer from replayed."""
    for k, v in properties.items():
        if (_text(k) or "").lower() == "ts":
            value = _text(v) or ""
            return int(value) if value.isdigit() else None
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")  # UnicodeDecodeError is handled by parse()
    return str(value)


def _check_path(key: str, value: str, *, absolute: bool) -> str | None:
    if len(value) > 255:
        return f"{key} is longer than 255 characters"
    if not _SAFE_PATH.match(value):
        return f"{key}={value!r} has characters a path here may not have"
    if absolute and not value.startswith("/"):
        return f"{key}={value!r} is not an absolute path"
    if not absolute and value.startswith("/"):
        return f"{key}={value!r} must be relative to the export"
    parts = value.split("/")
    if ".." in parts:
        return f"{key}={value!r} contains '..'"
    if any(p.startswith("-") for p in parts):
        return f"{key}={value!r} has a part starting with '-'"
    if "//" in value:
        return f"{key}={value!r} contains '//'"
    return None


def parse(
    name: str,
    properties: Mapping[Any, Any],
    *,
    addresses: list[str] | tuple[str, ...],
    port: int,
    host: str,
    key: bytes | None = None,
    now: float | None = None,
    max_skew: float = 600.0,
    ipv6: bool = False,
) -> ServerAd | Rejected:
    """Validate one resolved record; see the module docstring."""
    try:
        return _parse(name, properties, addresses, port, host, key, now, max_skew, ipv6)
    except UnicodeDecodeError:
        return Rejected(name, "TXT is not UTF-8")
    except Exception as e:  # the boundary: nothing from the network may crash us
        return Rejected(name, f"unreadable record ({type(e).__name__}: {e})")


def _parse(name, properties, addresses, port, host, key, now, max_skew, ipv6):
    size = sum(len(_text(k) or "") + len(_text(v) or "") + 2 for k, v in properties.items())
    if size > MAX_TXT_BYTES:
        return Rejected(name, f"TXT is {size} bytes, more than {MAX_TXT_BYTES}")
    fields: dict[str, str | None] = {}
    for k, v in properties.items():
        k = _text(k).lower()
        if k in fields:
            return Rejected(name, f"TXT key {k!r} appears twice")
        fields[k] = _text(v)
    if any(ch in (v or "") for v in fields.values() for ch in "\0\n\r"):
        return Rejected(name, "TXT value contains a control character")

    def need(k: str) -> str:
        v = fields.get(k)
        if v is None:
            raise _Missing(k)
        return v

    try:
        if need("txtvers") != TXTVERS:
            return Rejected(name, f"txtvers={fields['txtvers']!r}, this version reads {TXTVERS}")
        proto_text = need("proto")
        if not proto_text.isdigit():
            return Rejected(name, f"proto={proto_text!r} is not a number")
        proto = int(proto_text)
        if proto > PROTOCOL:
            return Rejected(
                name, f"speaks protocol {proto}, this client {PROTOCOL}: upgrade pistop-mdns here"
            )
        export = need("export")
        mpd_port_text = need("mpd_port")
        state = need("state")
    except _Missing as m:
        return Rejected(name, f"TXT has no {m.args[0]}=")

    problem = _check_path("export", export, absolute=True)
    if problem:
        return Rejected(name, problem)
    music = fields.get("music") or ""
    problem = _check_path("music", music, absolute=False)
    if problem:
        return Rejected(name, problem)
    if not mpd_port_text.isdigit() or not 1 <= int(mpd_port_text) <= 65535:
        return Rejected(name, f"mpd_port={mpd_port_text!r} is not a port number")
    if state not in SERVER_STATES:
        return Rejected(name, f"state={state!r} is not one of {', '.join(SERVER_STATES)}")
    nfsvers = fields.get("nfsvers") or "4"
    if nfsvers not in NFS_VERSIONS:
        return Rejected(name, f"nfsvers={nfsvers!r} is not one of {', '.join(NFS_VERSIONS)}")
    boot = fields.get("boot") or ""
    if not _BOOT.match(boot):
        return Rejected(name, f"boot={boot!r} is not a boot id")
    version = fields.get("ver") or ""
    if not _VERSION.match(version):
        return Rejected(name, f"ver={version!r} is not a version")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return Rejected(name, f"SRV port {port!r} is not a port number")
    if not isinstance(host, str) or not is_host_name(host):
        return Rejected(name, f"SRV target {escape(str(host))[:80]!r} is not a plain host name")

    instance = instance_of(name)
    authenticated = False
    if key is not None:
        given_mac, ts = fields.get("mac"), fields.get("ts")
        if not given_mac or not ts:
            return Rejected(name, "record is not signed, but a key is configured (wrong or no key on the server?)")
        if not auth.verify(key, given_mac, *_mac_parts(instance, port, fields)):
            return Rejected(name, "MAC does not match: the server has another key, or the record was forged")
        if not ts.isdigit():
            return Rejected(name, f"ts={ts!r} is not a time")
        if now is not None and abs(int(ts) - now) > max_skew:
            return Rejected(
                name,
                f"signed {int(now) - int(ts):+d} s from this host's clock (limit {max_skew:g} s): "
                f"check the clocks (NTP) of both hosts",
            )
        authenticated = True
        # Only what the key proves: the signed addresses and host name, not the
        # A/AAAA records or the SRV target anyone can send.
        addresses = [a for a in (fields.get("addrs") or "").split(",") if a]
        signed_host = fields.get("host")
        if signed_host is not None:
            if not is_host_name(signed_host):
                return Rejected(name, f"host={escape(signed_host)[:80]!r} is not a plain host name")
            host = signed_host

    usable = []
    for a in addresses:
        try:
            ip = ipaddress.ip_address(str(a).split("%")[0])
        except ValueError:
            return Rejected(name, f"address {escape(str(a))[:64]!r} is not an IP address")
        if (ip.version == 4 or ipv6) and not ip.is_link_local and not ip.is_multicast and not ip.is_unspecified:
            usable.append(str(ip))
    if not usable:
        return Rejected(name, "record has no usable address")
    usable.sort(key=lambda a: (":" in a, a))

    known = {"txtvers", "proto", "export", "nfsvers", "mpd_port", "music", "state",
             "boot", "ver", "addrs", "host", "ts", "mac"}
    extra = tuple(sorted((escape(k), escape(v or "")) for k, v in fields.items() if k not in known))
    return ServerAd(
        name=name,
        instance=escape(instance),
        host=host,
        addresses=tuple(usable),
        port=port,
        export=export,
        nfsvers=nfsvers,
        mpd_port=int(mpd_port_text),
        music=music,
        state=state,
        boot=boot,
        version=version,
        proto=proto,
        authenticated=authenticated,
        extra=extra,
    )


class _Missing(Exception):
    pass
