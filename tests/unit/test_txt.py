"""TXT records: what a server says, what a client accepts, and that nothing crashes."""

from __future__ import annotations

import logging

from hypothesis import given, settings, strategies as st

from pistop_mdns import mdns, txt
from pistop_mdns.model import ServerAd

NAME = "musicpi._pistop._tcp.local."
GOOD = {"txtvers": "1", "proto": "1", "export": "/srv/music", "nfsvers": "4", "mpd_port": "6600",
        "music": "Music", "state": "up", "boot": "fbe818cf-33fa-4f31", "ver": "0.1.0"}
KEY = b"0123456789abcdef0123456789abcdef"


def parse(props, **kw):
    kw.setdefault("addresses", ["198.18.0.11"])
    kw.setdefault("port", 5555)
    kw.setdefault("host", "musicpi.local.")
    return txt.parse(NAME, props, **kw)


def as_bytes(props):
    return {k.encode(): (v.encode() if v is not None else None) for k, v in props.items()}


def test_valid_record_from_bytes_as_zeroconf_047_delivers_it():
    ad = parse(as_bytes(GOOD))
    assert ad == ServerAd(name=NAME, instance="musicpi", host="musicpi.local.", addresses=("198.18.0.11",),
                          port=5555, export="/srv/music", nfsvers="4", mpd_port=6600, music="Music",
                          state="up", boot="fbe818cf-33fa-4f31", version="0.1.0", proto=1)


def test_keys_are_case_insensitive_and_unknown_keys_are_kept_aside():
    props = {k.upper(): v for k, v in GOOD.items()} | {"colour": "blue"}
    ad = parse(props)
    assert ad.export == "/srv/music" and ad.extra == (("colour", "blue"),)


def test_optional_keys_default():
    props = {k: v for k, v in GOOD.items() if k in ("txtvers", "proto", "export", "mpd_port", "state")}
    ad = parse(props)
    assert (ad.nfsvers, ad.music, ad.boot, ad.version) == ("4", "", "", "")


def reason(props, **kw):
    result = parse(props, **kw)
    assert isinstance(result, txt.Rejected), result
    return result.reason


def test_rejections_say_why():
    assert reason({**GOOD, "txtvers": "2"}) == "txtvers='2', this version reads 1"
    assert reason({**GOOD, "proto": "2"}) == "speaks protocol 2, this client 1: upgrade pistop-mdns here"
    assert reason({k: v for k, v in GOOD.items() if k != "export"}) == "TXT has no export="
    assert reason({**GOOD, "export": None}) == "TXT has no export="
    assert reason({**GOOD, "export": "srv/music"}) == "export='srv/music' is not an absolute path"
    assert reason({**GOOD, "export": "/srv/../etc"}) == "export='/srv/../etc' contains '..'"
    assert reason({**GOOD, "export": "/-o/x"}) == "export='/-o/x' has a part starting with '-'"
    assert reason({**GOOD, "export": "/srv/mu sic"}) == "export='/srv/mu sic' has characters a path here may not have"
    assert reason({**GOOD, "music": "/abs"}) == "music='/abs' must be relative to the export"
    assert reason({**GOOD, "music": "-oremount"}) == "music='-oremount' has a part starting with '-'"
    assert reason({**GOOD, "mpd_port": "66000"}) == "mpd_port='66000' is not a port number"
    assert reason({**GOOD, "state": "sleeping"}) == "state='sleeping' is not one of up, restart, stopping, poweroff"
    assert reason({**GOOD, "nfsvers": "2"}) == "nfsvers='2' is not one of 3, 4, 4.0, 4.1, 4.2"
    assert reason({**GOOD, "boot": "a b"}) == "boot='a b' is not a boot id"
    assert reason({**GOOD, "export": "/srv\nmusic"}) == "TXT value contains a control character"
    assert reason({**GOOD, "junk": "x" * 1400}).startswith("TXT is 1")
    assert reason(as_bytes(GOOD) | {b"export": b"/srv/\xff"}) == "TXT is not UTF-8"
    assert reason(GOOD, addresses=["fe80::1"]) == "record has no usable address"
    assert reason(GOOD, port=0) == "SRV port 0 is not a port number"


def test_ipv6_addresses_only_when_asked_and_ipv4_first():
    ad = parse(GOOD, addresses=["fd00::11", "198.18.0.11"], ipv6=True)
    assert ad.addresses == ("198.18.0.11", "fd00::11")
    assert parse(GOOD, addresses=["fd00::11", "198.18.0.11"]).addresses == ("198.18.0.11",)


def test_signed_record_round_trip_and_forgeries():
    props = signed()
    assert props["ts"] == "1000" and len(props["mac"]) == 64 and props["addrs"] == "198.18.0.11"
    ad = parse(props, key=KEY, now=1100.0)
    assert isinstance(ad, ServerAd) and ad.authenticated
    assert reason(props, key=b"another key of enough length", now=1100.0).startswith("MAC does not match")
    assert reason({**props, "state": "poweroff"}, key=KEY, now=1100.0).startswith("MAC does not match")
    # the same TXT under another instance name is a forgery too
    assert isinstance(txt.parse("other._pistop._tcp.local.", props, addresses=["198.18.0.13"], port=5555,
                                host="other.local.", key=KEY, now=1100.0), txt.Rejected)
    assert reason(GOOD, key=KEY, now=1100.0).startswith("record is not signed")
    # the SRV port and the addresses are signed too
    assert reason(props, key=KEY, now=1100.0, port=5556).startswith("MAC does not match")
    assert reason({**props, "addrs": "198.18.0.66"}, key=KEY, now=1100.0).startswith("MAC does not match")
    assert reason(props, key=KEY, now=1000.0 + 601) == \
        "signed +601 s from this host's clock (limit 600 s): check the clocks (NTP) of both hosts"


def signed(now=1000.0, **fields):
    body = {k: v for k, v in GOOD.items() if k not in ("txtvers", "proto")} | fields
    return txt.encode(body, instance="musicpi", key=KEY, now=now, port=5555, addresses=["198.18.0.11"],
                      host="musicpi.local.")


def test_with_a_key_the_signed_addresses_are_used_and_a_records_ignored():
    """Anyone can answer for musicpi.local's A record; only the signed addrs count."""
    ad = parse(signed(), key=KEY, now=1100.0, addresses=["198.18.0.66"])
    assert ad.addresses == ("198.18.0.11",)
    assert parse(signed(), key=KEY, now=1100.0, addresses=[]).addresses == ("198.18.0.11",)
    assert parse(GOOD, addresses=["198.18.0.66"]).addresses == ("198.18.0.66",)  # without a key: the A record


def test_with_a_key_the_signed_host_name_is_used_and_the_srv_target_ignored():
    """A forged SRV record can name another target; {host} in mount_source must not follow it."""
    ad = parse(signed(), key=KEY, now=1100.0, host="rogue.local.")
    assert ad.host == "musicpi.local."
    assert reason({**signed(), "host": "rogue.local."}, key=KEY, now=1100.0).startswith("MAC does not match")


def test_the_srv_target_must_be_a_plain_host_name():
    assert isinstance(parse(GOOD, host="musicpi.local."), ServerAd)
    assert reason(GOOD, host="-o.local.") == "SRV target '-o.local.' is not a plain host name"
    assert reason(GOOD, host="a b.local.").startswith("SRV target")
    assert reason(GOOD, host="x;reboot.local.").startswith("SRV target")
    assert reason(GOOD, host="").startswith("SRV target")


def test_names_from_the_network_are_escaped_for_logs_env_and_terminals():
    name = "evil\x1b[2J\u202ename\n._pistop._tcp.local."
    ad = txt.parse(name, {**GOOD, "note": "\x07bell"}, addresses=["198.18.0.11"], port=5555,
                   host="evil.local.")
    assert ad.instance == "evil\\x1b[2J\\u202ename\\x0a"
    assert ad.extra == (("note", "\\x07bell"),)
    assert ad.name == name  # the DNS name itself stays as it is: it is only a key
    assert txt.escape("caf\u00e9 \\") == "caf\u00e9 \\\\"


def test_unsigned_records_are_accepted_without_a_key():
    ad = parse(GOOD)
    assert isinstance(ad, ServerAd) and not ad.authenticated


def test_encode_without_key_has_the_protocol_fields():
    assert txt.encode({"export": "/srv/music"}, instance="x", key=None, now=0) == \
        {"txtvers": "1", "proto": "1", "export": "/srv/music"}


# ---------------------------------------------------------------- anything from the network

keys = st.one_of(st.sampled_from(list(GOOD) + ["ts", "mac"]), st.text(max_size=12), st.binary(max_size=12))
values = st.one_of(
    st.none(),
    st.sampled_from(["/srv/music", "-o", "..", "/a/../b", "/srv/-rw", "6600", "up", "poweroff", "", "1"]),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.binary(min_size=1000, max_size=1500),
)


@settings(max_examples=400, deadline=None)
@given(props=st.dictionaries(keys, values, max_size=12), addresses=st.lists(
    st.one_of(st.ip_addresses().map(str), st.text(max_size=10)), max_size=3), port=st.integers(-1, 70000),
    key=st.sampled_from([None, KEY]))
def test_parse_never_raises_and_accepts_only_safe_records(props, addresses, port, key):
    result = txt.parse(NAME, props, addresses=addresses, port=port, host="h.local.", key=key, now=1000.0)
    assert isinstance(result, (ServerAd, txt.Rejected))
    if isinstance(result, ServerAd):
        assert result.export.startswith("/") and ".." not in result.export.split("/")
        assert not any(p.startswith("-") for p in (result.export + "/" + result.music).split("/"))
        assert 1 <= result.mpd_port <= 65535 and 1 <= result.port <= 65535
        assert result.addresses
        assert key is None or result.authenticated


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@settings(max_examples=200, deadline=None)
@given(records=st.lists(st.dictionaries(keys, values, max_size=10), min_size=1, max_size=8))
def test_browser_warns_once_per_bad_record_name_and_never_reports_it(records):
    events = []
    browser = mdns.Browser(events.append)
    handler = _Collect()
    logger = logging.getLogger("pistop_mdns.mdns")
    logger.addHandler(handler)
    try:
        for props in records:
            browser.report(NAME, props, ["198.18.0.11"], 5555, "musicpi.local.")
    finally:
        logger.removeHandler(handler)
    warnings = [r for r in handler.records if r.levelno == logging.WARNING]
    # every record is reported, except a valid one that says what the last valid one said
    expected, last_valid = 0, None
    for props in records:
        parsed = txt.parse(NAME, props, addresses=["198.18.0.11"], port=5555, host="musicpi.local.")
        valid = isinstance(parsed, ServerAd)
        if not valid or parsed != last_valid:
            expected += 1
        if valid:
            last_valid = parsed
    assert len(events) == expected
    assert all(e.added == (i == 0) for i, e in enumerate(e for e in events if isinstance(e, mdns.Found)))
    # one warning per run of bad records: silence until a good one resets it
    runs, bad = 0, False
    for e in events:
        if isinstance(e, txt.Rejected) and not bad:
            runs += 1
        bad = isinstance(e, txt.Rejected)
    assert len(warnings) == runs
    assert all(NAME in r.getMessage() for r in warnings)


def test_a_signed_record_older_than_one_seen_is_a_replay_and_ignored(caplog):
    events = []
    now = [1000.0]
    browser = mdns.Browser(events.append, key=KEY, now=lambda: now[0])
    stopping = signed(now=1000.0, state="stopping")
    browser.report(NAME, stopping, [], 5555, "musicpi.local.")
    browser.report(NAME, signed(now=1010.0), [], 5555, "musicpi.local.")
    now[0] = 1020.0
    with caplog.at_level(logging.WARNING, "pistop_mdns.mdns"):
        browser.report(NAME, stopping, [], 5555, "musicpi.local.")  # captured earlier, sent again
        browser.report(NAME, stopping, [], 5555, "musicpi.local.")
    assert [type(e).__name__ for e in events] == ["Found", "Found", "Rejected", "Rejected"]
    assert [e.ad.state for e in events if isinstance(e, mdns.Found)] == ["stopping", "up"]
    assert "before the record already seen" in events[2].reason
    assert len([r for r in caplog.records if "replayed" in r.getMessage()]) == 1


def test_a_record_of_a_boot_that_a_newer_boot_replaced_is_a_replay_even_within_the_same_second(caplog):
    """Found on CI: a server stopped and started again within the second its last
    signature carried (the counter runs ahead of the clock when it signs twice in
    a second), so the captured `stopping` was not older than the new boot's `up`."""
    events = []
    browser = mdns.Browser(events.append, key=KEY, now=lambda: 1005.0)
    stopping = signed(now=1001.0, state="stopping", boot="first")
    browser.report(NAME, signed(now=1000.0, boot="first"), [], 5555, "musicpi.local.")
    browser.report(NAME, stopping, [], 5555, "musicpi.local.")
    browser.report(NAME, signed(now=1001.0, boot="second"), [], 5555, "musicpi.local.")  # started again
    with caplog.at_level(logging.WARNING, "pistop_mdns.mdns"):
        browser.report(NAME, stopping, [], 5555, "musicpi.local.")  # captured, sent again
    assert [type(e).__name__ for e in events] == ["Found", "Found", "Found", "Rejected"]
    assert [(e.ad.boot, e.ad.state) for e in events if isinstance(e, mdns.Found)] == \
        [("first", "up"), ("first", "stopping"), ("second", "up")]
    assert "earlier boot (first)" in events[3].reason
    assert len([r for r in caplog.records if "replayed" in r.getMessage()]) == 1


def test_a_name_zeroconf_refuses_is_ignored_with_one_warning(caplog):
    """zeroconf raises for some names (a control character); that is a rejected record too."""
    import asyncio

    async def scenario():
        events = []
        browser = mdns.Browser(events.append)
        browser._zc = object()  # never reached: AsyncServiceInfo refuses the name first
        name = "bell\x07._pistop._tcp.local."
        with caplog.at_level(logging.WARNING, "pistop_mdns.mdns"):
            await browser._resolve(name, settled=False)
            await browser._resolve(name, settled=False)
        return events

    events = asyncio.run(scenario())
    assert [type(e).__name__ for e in events] == ["Rejected", "Rejected"]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["ignoring bell\\x07._pistop._tcp.local.: zeroconf cannot resolve this name "
                        "(BadTypeInNameException)"]
