"""Commands about the server itself: login (save a profile), health, completion."""

from __future__ import annotations

import os

import click
from click.shell_completion import get_completion_class

from tether.cli import exits, output, profiles
from tether.cli.app import App, pass_app
from tether.cli.output import output_option


@click.command(short_help="check an API key against a server and save it as a profile")
@click.option(
    "--url",
    "login_url",
    metavar="URL",
    default=None,
    help="the server's base URL (asked when not given)",
)
@click.option(
    "--api-key",
    "login_key",
    metavar="KEY",
    default=None,
    help="your API key (asked, hidden, when not given)",
)
@click.option(
    "--profile",
    "login_profile",
    metavar="NAME",
    default=None,
    help="the profile to save (default: TETHER_PROFILE, else 'default')",
)
@pass_app
def login(app: App, login_url: str | None, login_key: str | None, login_profile: str | None) -> int:
    """Check an API key against a server and save both as a profile in
    ~/.config/tether/config.toml (XDG_CONFIG_HOME; mode 0600). TETHER_URL and TETHER_API_KEY
    still win over a profile."""
    from tether.sdk import Client

    name = login_profile or app.profile or os.environ.get("TETHER_PROFILE") or "default"
    url = login_url or app.url
    if not url:
        url = click.prompt(
            "Tether URL", default=os.environ.get("TETHER_URL") or profiles.DEFAULT_URL, err=True
        )
    key = login_key or app.api_key or click.prompt("API key", hide_input=True, err=True)
    url, key = url.strip().rstrip("/"), key.strip()
    app.url = url  # what a failure's message names
    with Client(url, key) as client:
        client.list_sessions()  # a key the server refuses is a 401 here: nothing is saved
    path = profiles.save(name, url, key)
    output.note(f"Logged in to {url}; saved as profile '{name}' in {path}")
    return exits.OK


@click.command(short_help="show the server's health")
@output_option
@pass_app
def health(app: App, fmt: str | None) -> int:
    """Show the server's health (exits 1 when it is not healthy)."""
    report = app.client(key_needed=False).health()
    output.record(report, fmt, ("status",))
    return exits.OK if report.get("status") == "healthy" else exits.FAILED


@click.command(
    short_help="print a shell completion script (bash, zsh, fish)",
    epilog="""\b
bash: eval "$(tether completion bash)"   (in ~/.bashrc)
zsh:  eval "$(tether completion zsh)"    (in ~/.zshrc)
fish: tether completion fish > ~/.config/fish/completions/tether.fish""",
)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> int:
    """Print the shell completion script for SHELL (commands, options, session ids)."""
    root = ctx.find_root()
    cls = get_completion_class(shell)
    assert cls is not None  # the choices are click's shells
    comp = cls(root.command, {}, "tether", "_TETHER_COMPLETE")
    click.echo(comp.source())
    return exits.OK


COMMANDS = [login, health, completion]
