"""`sandgate secret ...` and `sandgate vault rotate-master`: write-only secrets. A value goes
in through stdin or a hidden prompt (never argv, which other users can read in ps); no
command ever prints one. A provider secret (`--provider KIND`) is configured by fields:
plain ones with --field, secret ones only from a file (--file NAME=PATH, `-` for stdin)."""

from __future__ import annotations

import getpass
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

import click

from gateway.cli.common import fail, make_settings, policy_store, print_table, writable_home
from vault.crypto import VaultError

if TYPE_CHECKING:
    from gateway.settings import Settings
    from vault.providers import ProviderConfig
    from vault.store import Vault

SET_FIRST = "`sandgate secret set NAME` (the value on stdin) creates the vault and its key"


def _no_vault_yet(settings: Settings) -> bool:
    """Nothing was ever stored: no master key to open (and none given by value)."""
    source = settings.key_source
    return source.path is not None and not source.path.exists()


@contextmanager
def _vault(settings: Settings, *, create: bool = False) -> Iterator[Vault]:
    from gateway.db import make_engine
    from vault.keyring import open_vault

    if not create and _no_vault_yet(settings):
        fail(f"no vault in {settings.home} yet", SET_FIRST)
    writable_home(settings)
    engine = make_engine(settings.db_url)
    try:
        yield open_vault(engine, settings.key_source, create=create)
    except VaultError as e:
        fail(str(e))
    finally:
        engine.dispose()


def _check_name(name: str) -> None:
    from policies.schema import SECRET_NAME

    if not re.match(SECRET_NAME, name):
        fail(f"invalid secret name {name!r}",
             "use letters, digits and '_', not starting with a digit (it becomes an "
             "environment variable in the sandbox)")


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        value = getpass.getpass(f"value for {name} (hidden): ")
    else:
        value = sys.stdin.read()
        value = value[:-1] if value.endswith("\n") else value
    if not value:
        fail("empty secret value", f"pipe it in: printf %s \"$TOKEN\" | sandgate secret set {name}")
    return value


@click.group("secret")
def secret_group() -> None:
    """Store, list and remove secrets (values are write-only)."""


@secret_group.command("set")
@click.argument("name")
@click.argument("extra", nargs=-1)
@click.option("--provider", metavar="KIND",
              help="a secret the gateway mints or presents: oauth2_client_credentials, "
                   "oauth2_refresh_token, github_app, google_service_account, "
                   "mtls_client_cert")
@click.option("--field", "fields", multiple=True, metavar="NAME=VALUE",
              help="a provider's plain field (token_url, client_id, scopes, ...)")
@click.option("--file", "files", multiple=True, metavar="NAME=PATH",
              help="a provider's field read from a file (- for stdin); secret fields only so")
def set_secret(name: str, extra: tuple[str, ...], provider: str | None,
               fields: tuple[str, ...], files: tuple[str, ...]) -> None:
    """Store NAME's value, read from stdin or a hidden prompt; a new version if it exists.
    With --provider, NAME's provider configuration instead (docs/POLICY.md)."""
    if extra:
        fail("a secret value is never taken from the command line (other users see it in ps, "
             "and it stays in shell history)",
             f"pipe it in: printf %s \"$VALUE\" | sandgate secret set {name}")
    _check_name(name)
    if provider is None and (fields or files):
        fail("--field and --file configure a provider", "add --provider KIND")
    settings = make_settings()
    writable_home(settings)   # before asking for a value that could not be stored
    if provider is not None:
        config = _provider_config(provider, fields, files)
        with _vault(settings, create=True) as vault:
            from vault.providers import store

            try:
                version = store(vault, name, config)
            except VaultError as e:
                fail(str(e))
        click.echo(f"stored {name} version {version} ({provider})")
        return
    value = _read_value(name)
    with _vault(settings, create=True) as vault:
        try:
            version = vault.put(name, value)
        except VaultError as e:
            fail(str(e))
    click.echo(f"stored {name} version {version}")


def _pairs(option: str, items: tuple[str, ...]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{option} {item.split('=')[0]!r}: write it as {option} NAME=VALUE")
        if key in pairs:
            fail(f"{option} {key} is given twice")
        pairs[key] = value
    return pairs


def _provider_config(kind: str, fields: tuple[str, ...],
                     files: tuple[str, ...]) -> ProviderConfig:
    from vault.providers import KINDS, ProviderError, parse

    spec = KINDS.get(kind)
    plain, from_files = _pairs("--field", fields), _pairs("--file", files)
    for key in plain:
        if spec is not None and key in spec.secret:
            fail(f"{key} is secret: a command line is visible to other users (ps) and stays "
                 "in shell history", f"give it from a file: --file {key}=PATH (- for stdin)")
        if key in from_files:
            fail(f"{key} is given by --field and by --file")
    if list(from_files.values()).count("-") > 1:
        fail("only one --file can read stdin")
    values = {**plain, **{k: _read_file(k, path) for k, path in from_files.items()}}
    try:
        return parse(kind, values)
    except ProviderError as e:
        fail(str(e))


def _read_file(key: str, path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(64 * 1024 + 1)
    except (OSError, UnicodeDecodeError) as e:
        fail(f"--file {key}: cannot read {path}: {getattr(e, 'strerror', None) or e}")


def _bound_hosts(settings: Settings) -> dict[str, set[str]]:
    bound: dict[str, set[str]] = {}
    for policy in policy_store(settings).every_policy().values():
        for rule in policy.rules:
            for spec in rule.spec.inject:
                names = [spec.secret, getattr(spec, "access_key_id", None)]
                for secret in filter(None, names):
                    bound.setdefault(secret, set()).update(rule.spec.hosts)
    return bound


@secret_group.command("list")
def list_secrets() -> None:
    """Names and metadata of stored secrets, and the hosts policies bind them to."""
    settings = make_settings()
    if _no_vault_yet(settings):
        click.echo(f"no secrets stored in {settings.home} yet; {SET_FIRST}")
        return
    with _vault(settings) as vault:
        infos = vault.list()
    if not infos:
        click.echo("no secrets stored")
        return
    bound = _bound_hosts(settings)
    print_table([{
        "name": i.name, "version": i.version, "provider": i.provider or "-",
        "updated": _when(i.updated_at), "last_used": _when(i.last_used_at),
        "last_refresh": _when(i.refreshed_at), "expires": _when(i.expires_at),
        "error": f"{_when(i.error_at)} {i.error}" if i.error else "-",
        "bound_hosts": ",".join(sorted(bound.get(i.name, ()))) or "-",
        "k8s_namespaces": ",".join(i.kubernetes_namespaces) or "-",
    } for i in infos])


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "-"


@secret_group.command("namespaces")
@click.argument("name")
@click.argument("namespaces", nargs=-1)
def secret_namespaces(name: str, namespaces: tuple[str, ...]) -> None:
    """Let pods of these Kubernetes NAMESPACES bind NAME (annotation sandgate.dev/secrets);
    none given: no pod may. Replaces the list; pods already attached keep what they hold."""
    from policies.schema import K8S_NAMESPACE

    _check_name(name)
    for namespace in namespaces:
        if not re.match(K8S_NAMESPACE, namespace):
            fail(f"{namespace!r} is not a Kubernetes namespace name",
                 "lower-case letters, digits and '-', at most 63")
    with _vault(make_settings()) as vault:
        if not vault.set_namespaces(name, namespaces):
            fail(f"no secret named {name!r}", "see: sandgate secret list")
    allowed = ", ".join(sorted(set(namespaces)))
    click.echo(f"pods of {allowed} may bind {name}" if allowed
               else f"no pod may bind {name}")


@secret_group.command("rm")
@click.argument("name")
def remove_secret(name: str) -> None:
    """Delete NAME and all its versions."""
    _check_name(name)
    with _vault(make_settings()) as vault:
        if not vault.delete(name):
            fail(f"no secret named {name!r}", "see: sandgate secret list")
    click.echo(f"removed {name}")


@click.group("vault")
def vault_group() -> None:
    """Master key operations."""


@vault_group.command("rotate-master")
def rotate_master() -> None:
    """Re-wrap every data key with a new master key (works while the gateway runs)."""
    from gateway.processes.launch import ControlClient

    settings = make_settings()
    client = ControlClient(settings)
    try:
        if client.healthy():
            result = client.rotate_master()
            key_id, count = result["master_key_id"], result["rewrapped"]
        else:
            with _vault(settings) as vault:
                from vault.keyring import rotate_master_key

                try:
                    key_id, count = rotate_master_key(vault, settings.key_source)
                except VaultError as e:
                    fail(str(e))
    finally:
        client.close()
    click.echo(f"master key rotated: new key id {key_id}, {count} data key(s) re-wrapped")
