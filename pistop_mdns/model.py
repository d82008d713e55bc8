"""The data the client's decisions are made of: server records, events, actions.

Everything here is a frozen dataclass: plain values that the pure core
(`core.py`) takes in and hands out, and that tests build by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

# What a server says about itself in TXT `state` (and over the channel).
STATE_UP = "up"
STATE_RESTART = "restart"  # coming back soon: keep the share, wait a grace time
STATE_STOPPING = "stopping"  # stopped by its admin: tear down, never power off
STATE_POWEROFF = "poweroff"  # the host is going down: tear down, power off if asked
SERVER_STATES = (STATE_UP, STATE_RESTART, STATE_STOPPING, STATE_POWEROFF)


@dataclass(frozen=True)
class ServerAd:
    """One music server as its `_pistop._tcp` record describes it (validated)."""

    name: str  # full DNS-SD name, "musicpi._pistop._tcp.local."
    instance: str  # "musicpi"
    host: str  # "musicpi.local."
    addresses: tuple[str, ...]
    port: int  # the liveness channel's TCP port
    export: str  # NFS export path, "/srv/music"
    nfsvers: str
    mpd_port: int
    music: str  # music directory inside the export, "" when the export is it
    state: str
    boot: str  # changes when the server host reboots
    version: str  # the server's package version
    proto: int
    authenticated: bool = False  # MAC checked against the configured key
    extra: tuple[tuple[str, str], ...] = ()  # TXT keys this version does not know


# ---------------------------------------------------------------- events
# Every event carries `at`, a monotonic time in seconds: the core never reads
# a clock, so tests drive time by hand.


@dataclass(frozen=True)
class Started:
    """The client has started; `mounted` says whether the share is already mounted."""

    at: float
    mounted: bool = False


@dataclass(frozen=True)
class ServerSeen:
    """A valid record appeared or changed (`added` False for an update)."""

    at: float
    ad: ServerAd
    added: bool = True


@dataclass(frozen=True)
class ServerGone:
    """The record was withdrawn (goodbye) or expired from the cache."""

    at: float
    name: str


@dataclass(frozen=True)
class Tick:
    """A timer fired; the core checks its deadlines."""

    at: float


@dataclass(frozen=True)
class PlanFinished:
    """The executor finished plan `plan_id`; `ok` False when a required step failed."""

    at: float
    plan_id: int
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class ChannelUp:
    """The liveness channel to server `name` completed its handshake.

    `address` is the address it was reached at and `boot` the boot id the
    server gave; with a key the handshake proved both.
    """

    at: float
    name: str
    address: str = ""
    boot: str = ""


@dataclass(frozen=True)
class Heartbeat:
    """A heartbeat (or any message) arrived from server `name`."""

    at: float
    name: str


@dataclass(frozen=True)
class ChannelLost:
    """The liveness channel to server `name` broke."""

    at: float
    name: str


@dataclass(frozen=True)
class ServerNotice:
    """Server `name` says why it stops, or that it is up again (over the channel)."""

    at: float
    name: str
    reason: str  # one of SERVER_STATES
    authenticated: bool = False


@dataclass(frozen=True)
class StopRequested:
    """The client itself was asked to exit (SIGTERM/SIGINT)."""

    at: float


Event = (
    Started
    | ServerSeen
    | ServerGone
    | Tick
    | PlanFinished
    | ChannelUp
    | Heartbeat
    | ChannelLost
    | ServerNotice
    | StopRequested
)

# ---------------------------------------------------------------- actions
# Steps of a plan. The executor runs them in order; `required` steps stop the
# plan when they fail, the others are logged and skipped over.


@dataclass(frozen=True)
class RunHook:
    stage: str  # pre_mount, post_mount, pre_unmount, post_unmount
    env: tuple[tuple[str, str], ...] = ()
    required: bool = False


@dataclass(frozen=True)
class PointAutofs:
    """Make the autofs map entry point at `location` ("addr:/export")."""

    location: str
    required: bool = True


@dataclass(frozen=True)
class DisableAutofsEntry:
    """Comment out the share's autofs map entry (PointAutofs puts it back), so that
    no look into the mount point can mount it from a server that cannot answer."""

    required: bool = False


@dataclass(frozen=True)
class EnsureAutofs:
    """Start autofs, or reload it when running and its map changed."""

    required: bool = True


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    fstype: str
    options: str
    required: bool = True


@dataclass(frozen=True)
class Unmount:
    """Unmount `target`; `unreachable`: the server cannot answer (silent, or gone
    without a word), so the mount is detached at once and nobody waits for it."""

    target: str
    lazy: bool = False
    unreachable: bool = False
    required: bool = False


@dataclass(frozen=True)
class WaitReady:
    """Wait until the share is mounted at `mountpoint` and `marker` exists in it.

    In `mpd` mode there is no kernel mount: `nfs_url` is set and the marker
    is looked up over NFS instead.
    """

    mountpoint: str
    marker: str
    nfs_url: str = ""
    required: bool = True


@dataclass(frozen=True)
class SetMpdConf:
    """Point mpd.conf's proxy database at host:port (and music_directory, if set)."""

    host: str
    port: int
    music_directory: str = ""
    required: bool = True


@dataclass(frozen=True)
class StartMpd:
    """Start mpd, or restart it when it runs and this plan changed mpd.conf."""

    required: bool = True


@dataclass(frozen=True)
class StopService:
    """Stop a service; `wait` False: ask it to stop and go on (a stop that can
    finish only after a later step, or that may be stuck on a dead share)."""

    service: str  # "mpd" or "autofs": the executor maps it to the configured unit
    wait: bool = True
    required: bool = False


@dataclass(frozen=True)
class Notify:
    """Tell the LCD / desktop: "On" after bring-up, "MusicOff" or "PowerOff"."""

    message: str
    required: bool = False


@dataclass(frozen=True)
class ReportState:
    """Tell the server over the channel that this client is "up", "down" or "off" (powering off now)."""

    state: str
    required: bool = False


@dataclass(frozen=True)
class Backup:
    required: bool = False


@dataclass(frozen=True)
class Sync:
    required: bool = False


@dataclass(frozen=True)
class PowerOff:
    required: bool = True


Action = (
    RunHook
    | PointAutofs
    | DisableAutofsEntry
    | EnsureAutofs
    | Mount
    | Unmount
    | WaitReady
    | SetMpdConf
    | StartMpd
    | StopService
    | Notify
    | ReportState
    | Backup
    | Sync
    | PowerOff
)

# Plan kinds.
BRING_UP = "bring-up"
TEAR_DOWN = "tear-down"
RETARGET = "retarget"


@dataclass(frozen=True)
class Plan:
    """What to do, in order, and why (one line a user reads in the journal)."""

    id: int
    kind: str
    server: ServerAd | None
    actions: tuple[Action, ...]
    why: str
    power_off: bool = False
