"""The `sandgate` command. Every error a user can fix is one line on stderr and exit status 2;
never a traceback."""

from __future__ import annotations

import sys

import click

from gateway.cli.audit import audit_group
from gateway.cli.common import (
    EXIT_USAGE,
    fail,
)
from gateway.cli.image import image_group
from gateway.cli.policy import policy_group
from gateway.cli.run import run
from gateway.cli.secret import secret_group, vault_group
from gateway.cli.selftest import selftest
from gateway.cli.serve import api_command, serve
from gateway.cli.token import token_group
from gateway.errors import BadRequest, NotReady, SandgateError
from vault.crypto import VaultError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """sandgate: a deny-first egress and credential gateway for sandboxes."""


for command in (serve, api_command, run, selftest, audit_group, token_group, policy_group,
                secret_group, vault_group, image_group):
    cli.add_command(command)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"sandgate: error: {e.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except (BadRequest, NotReady, SandgateError) as e:
        fail(e.message, e.hint)
    except VaultError as e:
        fail(str(e))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
