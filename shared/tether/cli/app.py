"""The `tether` command group: its global options, the client they make, and how a failure
becomes one line on stderr and an exit code (tether.cli.exits)."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Any

import click

from tether import errors
from tether.cli import exits, profiles
from tether.cli.profiles import Connection, ProfileError


@dataclass
class App:
    """What the group's options chose; the connection is resolved when a command needs it
    (`tether up` needs none, and a broken profile must not stop it)."""

    url: str | None = None
    api_key: str | None = None
    profile: str | None = None
    _conn: Connection | None = None

    def connection(self) -> Connection:
        if self._conn is None:
            self._conn = profiles.resolve(self.url, self.api_key, self.profile)
        return self._conn

    def target(self) -> str:
        """The URL for messages (what was asked, when it cannot be resolved)."""
        try:
            return self.connection().url
        except ProfileError:
            return self.url or profiles.DEFAULT_URL

    def client(self, key_needed: bool = True) -> Any:
        from tether.sdk import Client

        conn = self.connection()
        if key_needed and not conn.api_key:
            raise errors.Unauthenticated(
                "set TETHER_API_KEY, pass --api-key or run `tether login` (the key `tether up` "
                "printed)"
            )
        return Client(conn.url, conn.api_key)


pass_app = click.make_pass_decorator(App)
LOCAL = frozenset({"up", "reset-admin", "seed"})  # commands that talk to no server


def fail(app: App | None, exc: BaseException) -> int | None:
    """Tell `exc` in one line; its exit code, or None when it is not a failure we know."""
    if isinstance(exc, ProfileError):
        click.echo(f"tether: {exc}", err=True)
        return exits.NOT_FOUND if exc.missing else exits.FAILED
    said = exits.classify(exc, app.target() if app else profiles.DEFAULT_URL)
    if said is None:
        return None
    click.echo(f"tether: {said[0]}", err=True)
    return said[1]


class Group(click.Group):
    """Commands in the order they are added (help reads as a tour); failures as exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("tether: interrupted", err=True)
            ctx.exit(exits.INTERRUPTED)
        except BrokenPipeError:
            raise  # the reader of our output left (`| head`): main() ends quietly
        except OSError as exc:
            if ctx.invoked_subcommand in LOCAL:  # its own files and ports, not a server's
                click.echo(f"tether: {exc}", err=True)
                ctx.exit(exits.FAILED)
            ctx.exit(fail(ctx.find_object(App), exc) or exits.FAILED)
        except Exception as exc:
            code = fail(ctx.find_object(App), exc)
            if code is None:
                raise
            ctx.exit(code)


def _version() -> str:
    try:
        return importlib.metadata.version("tether")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@click.group(
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Start with `tether up`, then `export TETHER_API_KEY=<printed key>` (or `tether "
    "login`) and `tether create`.\n\n" + exits.HELP,
)
@click.option(
    "--url",
    metavar="URL",
    default=None,
    help="API base URL (env TETHER_URL; else the profile's; else http://127.0.0.1:8080)",
)
@click.option(
    "--api-key",
    metavar="KEY",
    default=None,
    help="API key (env TETHER_API_KEY; else the profile's)",
)
@click.option(
    "--profile",
    metavar="NAME",
    default=None,
    help="saved connection from `tether login` (env TETHER_PROFILE; default: 'default')",
)
@click.version_option(_version(), "--version", prog_name="tether", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, url: str | None, api_key: str | None, profile: str | None) -> None:
    """Tether: remote sessions without servers to babysit."""
    ctx.obj = App(url or None, api_key or None, profile or None)
