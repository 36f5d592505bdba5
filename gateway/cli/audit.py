"""`sandgate audit ...`: list, follow, summarise, export and verify the audit log."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gateway.cli.common import EXIT_NO, fail, fail_environment, make_settings, print_table

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from gateway.settings import Settings

COLUMNS = ("time", "sandbox_id", "decision", "reason", "protocol", "method", "host", "port",
           "path", "status", "rule")


def _filter_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--since", help="from this time: ISO 8601, or 15m / 2h / 7d ago"),
        click.option("--until", help="before this time (same forms)"),
        click.option("--sandbox", help="one sandbox id"),
        click.option("--host", help="a host; wildcards: *.example.com"),
        click.option("--decision", type=click.Choice(["allow", "deny", "would_deny", "error"])),
        click.option("--reason", help="a reason code (docs/AUDIT.md)"),
        click.option("--rule", help="a rule id"),
        click.option("--status", type=int, help="an HTTP status"),
        click.option("--secret", help="rows that injected or caught this secret (by name)"),
        click.option("--mcp-tool", help="MCP tools/call rows of this tool"),
        click.option("--mcp-method", help="MCP rows of this JSON-RPC method"),
        click.option("--pod", help="rows of this Kubernetes pod: NAMESPACE/NAME"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _audit_filter(limit: int = 100, after_id: int | None = None, **kw: Any) -> Any:
    from gateway.audit.query import AuditFilter, parse_time

    try:
        since = parse_time(kw["since"]) if kw.get("since") else None
        until = parse_time(kw["until"]) if kw.get("until") else None
    except ValueError as e:
        fail(str(e))
    return AuditFilter(since=since, until=until, sandbox_id=kw.get("sandbox"),
                       host=kw.get("host"), decision=kw.get("decision"),
                       reason=kw.get("reason"), rule=kw.get("rule"), status=kw.get("status"),
                       secret=kw.get("secret"), mcp_tool=kw.get("mcp_tool"),
                       mcp_method=kw.get("mcp_method"), pod=kw.get("pod"), after_id=after_id,
                       limit=limit)


@contextmanager
def _engine(settings: Settings) -> Iterator[Engine]:
    from gateway.db import make_engine
    from gateway.processes.launch import ControlClient

    if settings.database_url is None and not (settings.home / "sandgate.db").exists():
        fail_environment(f"no audit log in {settings.home}",
                         "set SANDGATE_HOME to the data directory")
    client = ControlClient(settings)
    try:
        if client.healthy():
            client.flush_audit()  # rows still queued in the running gateway
    finally:
        client.close()
    engine = make_engine(settings.db_url)
    try:
        yield engine
    finally:
        engine.dispose()


audit_engine = _engine   # for the commands that read the log elsewhere (policy learn, replay)


def _emit(rows: list[dict[str, Any]], fmt: str, header: bool = True) -> None:
    from gateway.audit.query import to_csv

    if fmt == "json":
        for row in rows:
            click.echo(json.dumps(row))
    elif fmt == "csv":
        text = to_csv(rows)
        click.echo(text if header else text.split("\n", 1)[1], nl=False)
    else:
        for row in rows:
            row["time"] = row["time"][:23].replace("T", " ")
        if header:
            print_table(rows, COLUMNS)
        else:
            for row in rows:
                click.echo("  ".join(str(row[c] if row[c] is not None else "") for c in COLUMNS))


@click.group("audit", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--after", "after_id", type=int, help="cursor: only rows with a larger id")
@_filter_options
@click.pass_context
def audit_group(ctx: click.Context, /, as_json: bool, fmt: str, limit: int,
                after_id: int | None, **filters: Any) -> None:
    """Show recent egress attempts, oldest first (subcommands: tail, summary, export, verify)."""
    if ctx.invoked_subcommand is not None:
        return
    from gateway.audit.query import latest, page

    f = _audit_filter(limit, after_id, **filters)
    with _engine(make_settings()) as engine:
        rows = page(engine, f)[0] if after_id is not None else latest(engine, f)
    _emit([r.as_json() for r in rows], "json" if as_json else fmt)


@audit_group.command()
@click.option("-f", "--follow", is_flag=True, help="keep printing rows as they are written")
@click.option("-n", "--lines", default=10, show_default=True, type=click.IntRange(0, 100_000))
@click.option("--json", "as_json", is_flag=True)
@_filter_options
def tail(follow: bool, lines: int, as_json: bool, **filters: Any) -> None:
    """The last rows, and with -f every new one as it is written."""
    from gateway.audit.query import latest, page

    fmt = "json" if as_json else "table"
    with _engine(make_settings()) as engine:
        rows = latest(engine, _audit_filter(max(lines, 1), **filters)) if lines else []
        _emit([r.as_json() for r in rows], fmt)
        cursor = rows[-1].id if rows else _last_id(engine)
        while follow:
            new, _ = page(engine, _audit_filter(1000, cursor, **filters))
            if new:
                _emit([r.as_json() for r in new], fmt, header=False)
                cursor = new[-1].id
            else:
                time.sleep(0.5)


def _last_id(engine: Engine) -> int:
    from gateway.audit.query import AuditFilter, latest

    rows = latest(engine, AuditFilter(limit=1))
    return rows[-1].id or 0 if rows else 0


@audit_group.command()
@click.option("--top", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True)
@_filter_options
def summary(top: int, as_json: bool, **filters: Any) -> None:
    """Top denied hosts, counts per sandbox, rule and decision, and budget usage."""
    from gateway.audit.query import summary as summarise

    settings = make_settings()
    with _engine(settings) as engine:
        result: dict[str, Any] = summarise(engine, _audit_filter(**filters), top)
    result["budgets"] = _budgets(settings, filters.get("sandbox"))
    if as_json:
        click.echo(json.dumps(result))
        return
    budgets = result.pop("budgets")
    for title, rows in result.items():
        click.echo(f"{title.replace('_', ' ')}:")
        if rows:
            print_table(rows)
        else:
            click.echo("  (none)")
        click.echo()
    _show_budgets(budgets)


def _budgets(settings: Settings, sandbox: str | None) -> list[dict[str, Any]] | None:
    """Usage against budgets, from the running gateway that keeps the counts (None: it is
    not running)."""
    from gateway.errors import SandgateError
    from gateway.processes.launch import ControlClient

    client = ControlClient(settings)
    try:
        return client.budgets(sandbox) if client.healthy() else None
    except SandgateError:
        return None     # a gateway without budgets (an older one): the rest still stands
    finally:
        client.close()


def _show_budgets(budgets: list[dict[str, Any]] | None) -> None:
    from datetime import UTC, datetime

    from policies.budgets import show_period

    click.echo("budgets (this window):")
    if budgets is None:
        click.echo("  (no gateway answered: the running gateway keeps the budget counts)")
        return
    if not budgets:
        click.echo("  (none)")
        return
    print_table([{
        "sandbox_id": b["sandbox_id"] + (" (gone)" if b.get("sandbox_gone") else ""),
        "policy": b["policy"],
        "budget": f"rule {b['rule']}" if b["rule"] else "sandbox",
        "bytes_up": _against(b["bytes_up"], b["bytes_up_limit"]),
        "requests": _against(b["requests"], b["requests_limit"]),
        "per": show_period(b["per"]),
        "resets": datetime.fromtimestamp(b["resets_at"], UTC).strftime("%H:%M:%S"),
    } for b in budgets])


def _against(used: int, limit: int | None) -> str:
    if limit is None:
        return str(used)
    return f"{used}/{limit} ({100 * used // limit}%)"


@audit_group.command()
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "ocsf"]), default="jsonl")
@_filter_options
def export(fmt: str, **filters: Any) -> None:
    """Every matching row to stdout: JSON lines, CSV, or OCSF-shaped JSON lines."""
    from gateway.audit.query import iterate, to_csv, to_ocsf

    with _engine(make_settings()) as engine:
        first = True
        for row in iterate(engine, _audit_filter(**filters)):
            data = row.as_json()
            if fmt == "jsonl":
                click.echo(json.dumps(data))
            elif fmt == "ocsf":
                click.echo(json.dumps(to_ocsf(data)))
            else:
                text = to_csv([data])
                click.echo(text if first else text.split("\n", 1)[1], nl=False)
            first = False


@audit_group.command()
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ed25519 public key (PEM) to check signed heads and checkpoints against")
@click.option("--heads", "heads_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="chain heads kept outside the database (a gateway's audit-heads.jsonl, "
                   "or heads collected from OTLP); repeatable")
def verify(public_key: Path | None, heads_files: tuple[Path, ...]) -> None:
    """Check every gateway's hash chain, re-hashing each row: exit 0 when intact, 1 naming
    the first changed, deleted or reordered row, forged checkpoint or missing head."""
    from gateway.audit.chain import verify as check
    from gateway.audit.heads import HeadsFile, HeadSigner, load_public_key

    settings = make_settings()
    key = None
    heads = {}
    signing_key = settings.audit_signing_key_file
    if public_key is None and signing_key is not None and not signing_key.is_file():
        fail_environment(f"audit signing key {signing_key} does not exist",
                         "fix SANDGATE_AUDIT_SIGNING_KEY_FILE, or pass --public-key FILE")
    try:
        if public_key is not None:
            key = load_public_key(public_key)
        elif signing_key is not None:
            key = HeadSigner.from_file(signing_key).public_key
        for path in heads_files:
            heads[str(path)] = list(HeadsFile(path).heads())
    except (ValueError, OSError) as e:
        fail(str(e))
    with _engine(settings) as engine:
        report = check(engine, key, heads)
    for chain in report.chains:
        if chain.problem:
            click.echo(f"TAMPERED gateway {chain.gateway_id}: {chain.problem}")
            continue
        checked = [f"{chain.signed_heads} signed head(s) in the database"
                   if chain.signed_heads else "",
                   f"{chain.outside_heads} head(s) from --heads" if chain.outside_heads else ""]
        extra = "".join(f", {c}" for c in checked if c)
        click.echo(f"ok gateway {chain.gateway_id}: {chain.rows} rows, head seq "
                   f"{chain.head_seq} {chain.head_hash[:16]}{extra}")
    if report.unchained:
        click.echo(f"note: {report.unchained} rows from before the hash chain are not covered")
    if key is None:
        click.echo("note: no audit key given (--public-key): signatures of heads and "
                   "checkpoints were not checked")
    sys.exit(0 if report.ok else EXIT_NO)


@audit_group.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def keygen(path: Path) -> None:
    """Create an Ed25519 key for signing chain heads (PATH, 0600) and PATH.pub to publish."""
    from gateway.audit.heads import write_keypair

    if path.exists():
        fail(f"{path} exists; not overwriting a signing key")
    if not path.parent.is_dir():
        fail(f"directory {path.parent} does not exist", f"create it first: mkdir -p {path.parent}")
    if not os.access(path.parent, os.W_OK):
        fail_environment(f"cannot write in {path.parent}", "choose a directory you may write")
    public = write_keypair(path)
    click.echo(f"signing key {path} (set SANDGATE_AUDIT_SIGNING_KEY_FILE), public key {public}")
