"""The command line: parse, load the configuration, call actions/<verb>.run.

Every configuration key is also a flag of the commands that use it (the flag
wins over the file and the envdir). Exit statuses: 0 ok, 1 not found or
failed, 2 usage or configuration error.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

import click

from pistop_mdns import __version__, config, derive, fresh, logs
from pistop_mdns.config import KEYS, ConfigError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def config_options(*sections: str, exclude: tuple[str, ...] = ()) -> Callable:
    """Add one flag per configuration key of `sections` (typed from the schema)."""

    def decorate(f: Callable) -> Callable:
        for key in reversed([k for k in KEYS if k.section in sections and k.name not in exclude]):
            dest = f"cfg__{key.section}__{key.name}"
            help_text = f"[{key.section}] {key.name}: {key.help}"
            if key.kind == "bool":
                opt = click.option(f"{key.flag}/--no-{key.flag[2:]}", dest, default=None, help=help_text)
            else:
                metavar = {"int": "N", "float": "SECONDS" if "time" in key.name or key.name.endswith(
                    ("hold", "grace", "wait", "heartbeat", "window", "settle")) else "X",
                           "list": "A,B"}.get(key.kind, "TEXT")
                if key.choices:
                    metavar = "|".join(key.choices)
                opt = click.option(key.flag, dest, default=None, metavar=metavar, help=help_text)
            f = opt(f)
        return f

    return decorate


def _flags(kwargs: dict[str, Any]) -> dict[tuple[str, str], Any]:
    flags = {}
    for name in [n for n in kwargs if n.startswith("cfg__")]:
        value = kwargs.pop(name)
        if value is not None:
            _, section, key = name.split("__", 2)
            flags[(section, key)] = value
    return flags


def load(ctx: click.Context, kwargs: dict[str, Any], role: str | None = None) -> config.Config:
    """The effective configuration for this command; exit 2 with the reason on error."""
    try:
        cfg = config.load(ctx.obj["config"], ctx.obj["envdir"], _flags(kwargs))
        if role == "server":
            cfg = derive.server(cfg)
        elif role == "client":
            cfg = fresh.client(cfg)
        else:
            cfg = derive.general(cfg)
        return cfg
    except ConfigError as e:
        fail(str(e), 2)


def fail(message: str, status: int) -> None:
    # Under systemd the prefix gives the journal entry its priority (err), as logs.py does.
    prefix = "<3>" if os.environ.get("JOURNAL_STREAM") else ""
    click.echo(f"{prefix}pistop-mdns: error: {message}", err=True)
    sys.exit(status)


def flag_args(kwargs: dict[str, Any], sections: tuple[str, ...]) -> list[str]:
    """The configuration flags given in `kwargs` for `sections`, as a command line again."""
    args: list[str] = []
    for key in KEYS:
        value = kwargs.get(f"cfg__{key.section}__{key.name}")
        if key.section not in sections or value is None:
            continue
        if key.kind == "bool":
            args.append(key.flag if value else f"--no-{key.flag[2:]}")
        else:
            args += [key.flag, str(value)]
    return args


def config_args(ctx: click.Context) -> list[str]:
    """The global options that reproduce this configuration in a child process."""
    args = []
    if ctx.obj["config"]:
        args += ["--config", ctx.obj["config"]]
    if ctx.obj["envdir"]:
        args += ["--envdir", ctx.obj["envdir"]]
    return args


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="pistop-mdns")
@click.option("--config", "-c", "config_path", metavar="PATH", default=None,
              help=f"Configuration file (default: {config.DEFAULT_CONFIG} when it exists).")
@click.option("--envdir", metavar="DIR", default=None,
              help="pistop-style variables directory (e.g. /service/fclient) to take settings from.")
@click.option("--log-level", type=click.Choice(logs.LEVELS), default="info", show_default=True,
              help="How much to log (to stderr; journald keeps it under systemd).")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, envdir: str | None, log_level: str) -> None:
    """Start and stop a house of music players together, with no IP address typed anywhere.

    Run `server` on the music server and `client` on every room's board; `browse`
    shows what the LAN offers. See `man pistop-mdns`.
    """
    logs.setup(log_level)
    ctx.obj = {"config": config_path, "envdir": envdir, "log_level": log_level}


@main.command("server")
@config_options("general", "server", "notify")
@click.pass_context
def server_command(ctx: click.Context, **kwargs: Any) -> None:
    """Advertise this host's music share over mDNS and serve the liveness channel."""
    from pistop_mdns.actions import server

    shutdown_flags = flag_args(kwargs, ("general",))  # before load() takes them
    cfg = load(ctx, kwargs, "server")
    sys.exit(server.run(cfg, config_args=config_args(ctx), shutdown_flags=shutdown_flags))


@main.command("client")
@click.option("--dry-run", is_flag=True, help="Log each plan step instead of carrying it out.")
@config_options("general", "client", "notify")
@click.pass_context
def client_command(ctx: click.Context, dry_run: bool, **kwargs: Any) -> None:
    """Follow a music server: mount its share, point mpd at it, tear down when it goes."""
    from pistop_mdns.actions import client

    cfg = load(ctx, kwargs, "client")
    sys.exit(client.run(cfg, dry_run=dry_run))


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@config_options("general", exclude=tuple(k.name for k in KEYS if k.section == "general" and k.name != "state_dir"))
@click.pass_context
def status_command(ctx: click.Context, as_json: bool, **kwargs: Any) -> None:
    """Show the running client's state (or the server's clients); exit 0 up, 1 not up, 2 none runs."""
    from pistop_mdns.actions import status

    cfg = load(ctx, kwargs)
    sys.exit(status.run(cfg, as_json=as_json))


@main.command("browse")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with --watch: one object per event).")
@click.option("--watch", is_flag=True, help="Print added/updated/removed events until interrupted.")
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="How long to look (default 3; with --watch: until interrupted).")
@config_options("general", exclude=("timeout", "state_dir", "service_manager", "service_dir", "hostname"))
@click.pass_context
def browse_command(ctx: click.Context, as_json: bool, watch: bool, timeout: float | None, **kwargs: Any) -> None:
    """List the pistop music servers on the LAN (exit 1 when none is found)."""
    from pistop_mdns.actions import browse

    cfg = load(ctx, kwargs)
    if timeout is None and not watch:
        timeout = 3.0
    sys.exit(browse.run(cfg, timeout=timeout, as_json=as_json, watch=watch))


@main.command("keygen")
@click.argument("path", required=False)
@click.option("--force", is_flag=True, help="Replace an existing key (then copy it to every host again).")
@click.pass_context
def keygen_command(ctx: click.Context, path: str | None, force: bool) -> None:
    """Write a new pre-shared key (mode 600) to copy to the server and every board."""
    from pistop_mdns.actions import keygen

    cfg = load(ctx, {})
    sys.exit(keygen.run(path or cfg.general.key_file, force=force))


@main.command("shutdown", context_settings={"help_option_names": ["--help"], "ignore_unknown_options": True})
@click.option("--server", "server_name", metavar="NAME",
              help="Ask the server NAME on the LAN to shut down (needs the shared key).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@config_options("general", "shutdown")
@click.pass_context
def shutdown_command(ctx: click.Context, server_name: str | None, args: tuple[str, ...], **kwargs: Any) -> None:
    """Power the music server off safely: clients down first, then services, sync, unmount, power.

    ARGS replace `-h now` of the power-off command, as pistop's pishutdown passed them to
    shutdown(8): `pistop-mdns shutdown -r now` reboots.
    """
    from pistop_mdns.actions import shutdown

    cfg = load(ctx, kwargs)
    try:
        if server_name:
            sys.exit(shutdown.run_remote(cfg, server_name, list(args)))
        try:
            cfg = derive.server(cfg)
        except ConfigError:
            pass  # the export is only a default for the data disk
        sys.exit(shutdown.run_local(cfg, list(args)))
    except ConfigError as e:
        fail(str(e), 2)


@main.command("demo")
@click.option("--keep", is_flag=True, help="Leave the LAN up until Ctrl-C and print what to try in it.")
@click.option("--dry-run", is_flag=True,
              help="The quick version: the boards only plan their steps; needs no music packages.")
def demo_command(keep: bool, dry_run: bool) -> None:
    """Run a music server and two room boards on a simulated LAN on this machine (needs root)."""
    from pistop_mdns.actions import demo

    sys.exit(demo.run(keep=keep, dry_run=dry_run))


@main.group("config")
def config_group() -> None:
    """Show, check or print an example of the configuration."""


@config_group.command("show")
@click.option("--role", type=click.Choice(["server", "client", "none"]), default="none",
              help="Also derive the values this role fills in at start-up.")
@config_options("general", "server", "client", "notify", "backup", "update", "shutdown")
@click.pass_context
def config_show(ctx: click.Context, role: str, **kwargs: Any) -> None:
    """Print the effective configuration as TOML, each value with where it came from."""
    cfg = load(ctx.parent, kwargs, None if role == "none" else role)
    click.echo(config.show(cfg))


@config_group.command("check")
@click.option("--role", type=click.Choice(["server", "client", "none"]), default="none",
              help="Also check that this role's derived values can be found.")
@click.pass_context
def config_check(ctx: click.Context, role: str) -> None:
    """Validate the configuration (exit 2 with the reason when it is wrong)."""
    load(ctx.parent, {}, None if role == "none" else role)
    where = ctx.parent.obj["config"] or (config.DEFAULT_CONFIG if os.path.exists(config.DEFAULT_CONFIG)
                                         else "defaults")
    click.echo(f"configuration ok ({where})")


@config_group.command("example")
def config_example() -> None:
    """Print a configuration file with every key, commented out, at its default."""
    click.echo(config.example())


@main.command("backup")
@click.option("--dry-run", is_flag=True, help="Print the plan and run rsync --dry-run; change nothing.")
@config_options("general", "backup", exclude=("interfaces", "ip_version", "key_file", "max_clock_skew",
                                               "state_dir", "service_manager", "service_dir"))
@click.pass_context
def backup_command(ctx: click.Context, dry_run: bool, **kwargs: Any) -> None:
    """Copy [backup] paths to DEST/backup/HOSTNAME/ with rsync (exit 1 if one failed)."""
    from pistop_mdns.actions import backup

    cfg = load(ctx, kwargs)
    sys.exit(backup.run(cfg, dry_run=dry_run, echo=click.echo))


@main.command("update")
@click.option("--dry-run", is_flag=True, help="Print what would be upgraded and how; change nothing.")
@config_options("general", "update", exclude=("hostname", "interfaces", "ip_version", "key_file",
                                               "max_clock_skew", "service_manager", "service_dir"))
@click.pass_context
def update_command(ctx: click.Context, dry_run: bool, **kwargs: Any) -> None:
    """Upgrade the [update] packages that have a newer version (via at when installed)."""
    from pistop_mdns.actions import update

    cfg = load(ctx, kwargs)
    sys.exit(update.run(cfg, dry_run=dry_run, echo=click.echo))


@main.command("install-service")
@click.argument("role", type=click.Choice(["server", "client", "update", "rsync"]))
@click.option("--init", type=click.Choice(["systemd", "daemontools"]), default=None,
              help="Service manager (default: systemd when it runs, else daemontools when installed).")
@click.option("--remove", is_flag=True, help="Stop the service and remove what install-service wrote.")
@click.option("--dry-run", is_flag=True, help="Print the files and commands instead; change nothing.")
@click.option("--root", metavar="DIR", default="/", show_default=True,
              help="Write every file under DIR (another system's disk, tests); only enable units there.")
@click.option("--from-pistop", "from_pistop", metavar="[DIR]", is_flag=False, flag_value="", default=None,
              help="Replace pistop's service (DIR, default /service/fserver, fclient, update or rsync.875): "
                   "take its variables, start the new service, then stop and remove the old one.")
@config_options("general", "server", "update", exclude=tuple(
    k.name for k in KEYS if k.section in ("general", "server", "update")
    and k.name not in ("service_dir", "timeout", "service_manager", "mpd_conf", "port", "rsync_port",
                       "interval")))
@click.pass_context
def install_service_command(ctx: click.Context, role: str, init: str | None, remove: bool, dry_run: bool,
                            root: str, from_pistop: str | None, **kwargs: Any) -> None:
    """Run ROLE (server, client, update, rsync) as a systemd or daemontools service."""
    from pistop_mdns import pistop
    from pistop_mdns.actions import install_service

    flags = _flags(kwargs)
    envdir = ctx.obj["envdir"]
    try:
        cfg = derive.general(config.load(ctx.obj["config"], envdir, flags))
        if from_pistop is not None and not envdir:
            # The old service's variables are part of the configuration being moved.
            old = os.path.abspath(from_pistop) if from_pistop else \
                os.path.join(os.path.abspath(root), pistop.default_dir(role, cfg.general.service_dir).lstrip("/"))
            if os.path.isdir(old):
                cfg = derive.general(config.load(ctx.obj["config"], old, flags))
    except ConfigError as e:
        fail(str(e), 2)
    sys.exit(install_service.run(cfg, role, init=init, remove=remove, dry_run=dry_run, root=root,
                                 config_path=ctx.obj["config"], envdir=envdir, echo=click.echo,
                                 from_pistop=from_pistop))


if __name__ == "__main__":
    main()
