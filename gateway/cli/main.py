"""The `sandgate` command. Every error is one line on stderr with an exit status from
gateway.cli.common (2 usage, 1 "no", 3 environment, 4 a bug); never a traceback, unless
SANDGATE_DEBUG=1 asks for one."""

from __future__ import annotations

import errno
import importlib
import os
import sys
from typing import Any, NoReturn

import click

from gateway.cli.common import EXIT_BUG, EXIT_ENVIRONMENT, fail

# Each subcommand is imported when it runs (or for --help), not at start: importing them all
# took a `sandgate run` one-liner a quarter of its time.
COMMANDS = {
    "serve": "gateway.cli.serve:serve",
    "api": "gateway.cli.serve:api_command",
    "run": "gateway.cli.run:run",
    "selftest": "gateway.cli.selftest:selftest",
    "audit": "gateway.cli.audit:audit_group",
    "token": "gateway.cli.token:token_group",
    "policy": "gateway.cli.policy:policy_group",
    "secret": "gateway.cli.secret:secret_group",
    "vault": "gateway.cli.secret:vault_group",
    "image": "gateway.cli.image:image_group",
    "mcp": "gateway.cli.mcp:mcp_command",
    "approvals": "gateway.cli.approvals:approvals_group",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, name = COMMANDS[cmd_name].partition(":")
        command: click.Command = getattr(importlib.import_module(module), name)
        return command


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("sandgate")
    except metadata.PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown (not installed)"


def _print_version(ctx: click.Context, _param: Any, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"sandgate {_version()}")
        ctx.exit()


def _home_line() -> str:
    from gateway.home import default_home

    chosen = os.environ.get("SANDGATE_HOME")
    if chosen:
        return f"data directory: {chosen} (from SANDGATE_HOME)"
    who = "root" if os.geteuid() == 0 else "this user"
    return (f"data directory: {default_home()} (the default for {who}; set SANDGATE_HOME "
            "to use another)")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             invoke_without_command=True)
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version and exit.")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """sandgate: a deny-first egress and credential gateway for sandboxes."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        click.echo(f"\n{_home_line()}")


def main(argv: list[str] | None = None) -> None:
    """Run `sandgate` with `argv` (default: the command line)."""
    try:
        cli.main(args=argv, prog_name="sandgate", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        fail(e.format_message())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        if os.environ.get("SANDGATE_DEBUG") == "1":
            raise
        report_error(e)


def report_error(error: Exception) -> NoReturn:
    """Errors no command turned into a message of its own: known kinds get a fix, the rest
    are bugs."""
    from gateway.errors import SandgateError
    from vault.crypto import VaultError

    if isinstance(error, SandgateError):
        fail(error.message, error.hint)
    if isinstance(error, VaultError):
        fail(str(error))
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        if isinstance(error, PermissionError) or error.errno == errno.EROFS:
            fail(f"{where}{error.strerror}", "run as the owner of the data directory, or set "
                 "SANDGATE_HOME", EXIT_ENVIRONMENT)
        fail(f"{where}{error.strerror or error}", code=EXIT_ENVIRONMENT)
    if type(error).__module__.startswith("sqlalchemy"):
        cause = str(getattr(error, "orig", None) or error).splitlines()[0]
        fail(f"database: {cause}", "check SANDGATE_HOME (is it writable?) or "
             "SANDGATE_DATABASE_URL", EXIT_ENVIRONMENT)
    fail(f"internal error: {type(error).__name__}: {error}".splitlines()[0],
         "a bug in sandgate; SANDGATE_DEBUG=1 shows the traceback", EXIT_BUG)


if __name__ == "__main__":
    main()

