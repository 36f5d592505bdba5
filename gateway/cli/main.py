"""The `sandgate` command. Every error is one line on stderr with an exit status from
gateway.cli.common (2 usage, 1 "no", 3 environment, 4 a bug); never a traceback, unless
SANDGATE_DEBUG=1 asks for one."""

from __future__ import annotations

import errno
import os
import sys
from importlib import metadata

import click

from gateway.cli.approvals import approvals_group
from gateway.cli.audit import audit_group
from gateway.cli.common import EXIT_BUG, EXIT_ENVIRONMENT, fail
from gateway.cli.image import image_group
from gateway.cli.mcp import mcp_command
from gateway.cli.policy import policy_group
from gateway.cli.run import run
from gateway.cli.secret import secret_group, vault_group
from gateway.cli.selftest import selftest
from gateway.cli.serve import api_command, serve
from gateway.cli.token import token_group


def _version() -> str:
    try:
        return metadata.version("sandgate")
    except metadata.PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown (not installed)"


def _home_line() -> str:
    from gateway.settings import default_home

    chosen = os.environ.get("SANDGATE_HOME")
    if chosen:
        return f"data directory: {chosen} (from SANDGATE_HOME)"
    who = "root" if os.geteuid() == 0 else "this user"
    return (f"data directory: {default_home()} (the default for {who}; set SANDGATE_HOME "
            "to use another)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             invoke_without_command=True)
@click.version_option(_version(), "--version", prog_name="sandgate",
                      message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """sandgate: a deny-first egress and credential gateway for sandboxes."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        click.echo(f"\n{_home_line()}")


for command in (serve, api_command, run, selftest, audit_group, token_group, policy_group,
                secret_group, vault_group, image_group, mcp_command, approvals_group):
    cli.add_command(command)


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
        _report(e)


def _report(error: Exception) -> None:
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

