"""`sandgate policy learn` and `sandgate policy replay`: the authoring loop over the audit log
(docs/POLICY.md, The authoring loop). Both read the log directly, like `sandgate audit`,
after asking a running gateway to write what it still holds."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gateway.cli.common import EXIT_BUG, EXIT_NO, fail, load_policy, make_settings

if TYPE_CHECKING:
    from gateway.settings import Settings
    from policies.matcher import CompiledPolicy
    from policies.recorded import Recorded
    from policies.schema import RuleSpec

LEARNED_NAME = "learned"


def read_recordings(settings: Settings, since: str | None,
                    sandboxes: Sequence[str]) -> list[Recorded]:
    """The recorded requests of `sandboxes` since `since` (a time or a duration)."""
    from gateway.audit.query import parse_time
    from gateway.audit.recordings import MAX_ROWS, recordings
    from gateway.cli.audit import audit_engine

    try:
        start = parse_time(since) if since else None
    except ValueError as e:
        fail(str(e))
    with audit_engine(settings) as engine:
        records, cut = recordings(engine, since=start, sandboxes=sandboxes)
    if cut:
        click.echo(f"sandgate: warning: read the first {MAX_ROWS} audit rows only; narrow "
                   "with --since or --sandbox", err=True)
    return records


class RecordingRules:
    """The rule that decided a recorded request, by policy name and rule id: from the
    policies given, else from the policy store (None when neither has it any more)."""

    def __init__(self, settings: Settings, known: Sequence[CompiledPolicy] = ()) -> None:
        self.settings = settings
        self.policies: dict[str, CompiledPolicy | None] = {p.name: p for p in known}

    def __call__(self, policy: str | None, rule: str | None) -> RuleSpec | None:
        if policy is None or rule is None:
            return None
        if policy not in self.policies:
            self.policies[policy] = self._stored(policy)
        compiled = self.policies[policy]
        found = [r.spec for r in compiled.rules if r.id == rule] if compiled else []
        return found[0] if found else None

    def _stored(self, name: str) -> CompiledPolicy | None:
        from gateway.cli.common import policy_store
        from gateway.errors import SandgateError
        from policies.loader import PolicyError

        store = policy_store(self.settings)
        try:
            return store.load(store.path_for(name))
        except (SandgateError, PolicyError, OSError):
            return None


def learned_policy(settings: Settings, records: Sequence[Recorded], *, name: str | None,
                   base: CompiledPolicy | None, min_siblings: int, source: str,
                   recording: Sequence[CompiledPolicy] = ()) -> str:
    """The learned policy's YAML, checked to load as the gateway would load it; a summary of
    what was left out goes to stderr."""
    from policies.learn import learn
    from policies.learn_yaml import render, summary

    lookup = RecordingRules(settings, [*recording, *([base] if base else [])])
    learned = learn(records, base=base, recording_rule=lookup, min_siblings=min_siblings,
                    taken_ids=[r.spec.id for r in base.rules] if base else ())
    stamp = datetime.now().astimezone().strftime("%Y-%m-%dT%H:%M:%S%z")
    header = [f"learned by sandgate policy learn from {source}, {stamp}",
              f"{len(records)} recorded request(s): {summary(learned)}",
              "review every rule before enforcing it: it allows what the recording did"]
    text = render(learned, name=name or (base.name if base else LEARNED_NAME),
                  base=base.spec if base else None, header=header)
    _must_load(settings, text)
    click.echo(summary(learned), err=True)
    return text


def _must_load(settings: Settings, text: str) -> None:
    from gateway.cli.common import policy_store
    from policies.loader import PolicyError, directory_resolver, load_text

    try:
        load_text(text, "learned.yaml", directory_resolver(policy_store(settings).search))
    except PolicyError as e:
        fail(f"the learned policy does not load: {str(e).splitlines()[0]}",
             "a bug in sandgate; please report it with the audit rows", EXIT_BUG)


def emit(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text)
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror}", "choose another -o FILE")
    click.echo(f"wrote {output}", err=True)


@click.command("learn")
@click.option("--sandbox", "sandboxes", multiple=True, metavar="ID",
              help="the requests of this sandbox (repeatable)")
@click.option("--since", help="requests from this time on: ISO 8601, or 15m / 2h / 7d ago")
@click.option("--from", "base_ref", metavar="POLICY",
              help="start from this policy: its rules are kept, what it lacks is added")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="write the policy to FILE (default: standard output)")
@click.option("--name", help="the learned policy's name (default: that of --from, or "
                             f"{LEARNED_NAME})")
@click.option("--wildcard-min", type=click.IntRange(2), default=None, metavar="N",
              help="names under one registrable domain before they become one wildcard "
                   "(default 5)")
def learn_command(sandboxes: tuple[str, ...], since: str | None, base_ref: str | None,
                  output: Path | None, name: str | None, wildcard_min: int | None) -> None:
    """A policy that allows what recorded requests needed: hosts, ports, protocols,
    methods, generalised paths and bound credentials, each rule with its hit count and
    first and last time. Record with a `mode: monitor` policy (or `sandgate run --learn`)."""
    from policies.learn import MIN_SIBLINGS

    if not sandboxes and not since:
        fail("say which requests to learn from", "pass --sandbox ID or --since 2h")
    settings = make_settings()
    base = load_policy(base_ref, settings) if base_ref else None
    records = read_recordings(settings, since, sandboxes)
    source = ", ".join([*(f"sandbox {s}" for s in sandboxes),
                        *([f"since {since}"] if since else [])])
    emit(learned_policy(settings, records, name=name, base=base, source=source,
                        min_siblings=wildcard_min or MIN_SIBLINGS), output)


@click.command("replay")
@click.argument("candidate")
@click.option("--since", default="7d", show_default=True,
              help="requests from this time on: ISO 8601, or 15m / 2h / 7d ago")
@click.option("--sandbox", "sandboxes", multiple=True, metavar="ID",
              help="only the requests of this sandbox (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="the result as JSON (for CI)")
def replay_command(candidate: str, since: str, sandboxes: tuple[str, ...],
                   as_json: bool) -> None:
    """Judge recorded requests with CANDIDATE (a file or a stored policy's name) and show
    what would change: newly denied and newly allowed requests, by host and rule, with
    counts and sample paths. Exit 1 when a request that went out would be denied."""
    from policies.replay import replay, report_lines

    settings = make_settings()
    policy = load_policy(candidate, settings)
    result = replay(policy, read_recordings(settings, since, sandboxes))
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    else:
        for line in report_lines(result):
            click.echo(line)
    sys.exit(EXIT_NO if result.newly_denied else 0)


def recording_policy(settings: Settings, base: CompiledPolicy | None) -> Path:
    """A `mode: monitor` copy of `base` (or an empty policy) for `sandgate run --learn`:
    nothing is blocked, everything is recorded with the rule that would have decided. One
    file per policy name, kept: a running gateway watches every policy file it loaded (a
    removed one would show in `policy status` as an error), and reloads this one when a
    later run changes it."""
    import yaml

    from gateway.cli.common import writable_home

    data: dict[str, object] = {"version": 1, "name": LEARNED_NAME, "rules": []}
    if base is not None:
        data = base.spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    data["mode"] = "monitor"
    directory = writable_home(settings) / "recordings"
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / f"{data['name']}.yaml"
    text = yaml.safe_dump(data, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def learn_from_run(settings: Settings, sandbox_id: str, base: CompiledPolicy | None,
                   output: Path | None) -> None:
    """The end of `sandgate run --learn`: the policy its sandbox's requests needed, written
    to `output`, or to stderr (the command's own output keeps standard output)."""
    from policies.learn import MIN_SIBLINGS

    records = read_recordings(settings, None, [sandbox_id])
    text = learned_policy(settings, records, name=None, base=base, min_siblings=MIN_SIBLINGS,
                          source=f"sandgate run --learn, sandbox {sandbox_id}")
    if output is None:
        click.echo(text, nl=False, err=True)
    else:
        emit(text, output)
