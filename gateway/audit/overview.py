"""The web view's overview of egress (gateway/web/overview.html): allowed and denied attempts
over time per host, top denied hosts and reasons, counts per sandbox and per policy. Grouped
in the database, so a large log is not read row by row; the time buckets are a CASE over the
bucket edges, which SQLite and PostgreSQL read alike.

Allowed means the request went out (`allow`, and `would_deny` of a monitor-mode policy);
denied means `deny`. `error` rows (the conversation failed after a decision) count in
neither."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, literal
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from gateway.audit.query import AuditFilter, _statement

ALLOWED = ("allow", "would_deny")
OTHER = "(other hosts)"


def edges(since: datetime, until: datetime, buckets: int) -> list[datetime]:
    """`buckets` + 1 evenly spaced instants from `since` to `until`."""
    step = (until - since) / buckets
    return [since + step * i for i in range(buckets)] + [until]


def overview(engine: Engine, f: AuditFilter, *, buckets: int = 48, hosts: int = 8,
             top: int = 10, now: datetime | None = None) -> dict[str, Any]:
    """`f.since` defaults to 24 hours before `now`."""
    until = f.until or now or datetime.now(UTC)
    since = f.since or until - timedelta(hours=24)
    f = replace(f, since=since, until=until)
    bounds = edges(since, until, buckets)
    base = _statement(f).subquery()
    bucket = case(*[(base.c.time < edge, literal(i)) for i, edge in enumerate(bounds[1:])],
                  else_=literal(buckets - 1))
    passed = case((base.c.decision.in_(ALLOWED), literal("allowed")),
                  (base.c.decision == "deny", literal("denied")), else_=literal("other"))
    with Session(engine) as session:
        cells = session.exec(select(bucket, base.c.host, passed, func.count())
                             .group_by(bucket, base.c.host, passed)).all()
        tables = {name: _grouped(session, base, column, top)
                  for name, column in (("per_sandbox", "sandbox_id"), ("per_policy", "policy"))}
        denied = base.c.decision == "deny"
        tables["top_denied_hosts"] = _top(session, base, "host", denied, top)
        tables["top_denied_reasons"] = _top(session, base, "reason", denied, top)
    return {"since": _text(since), "until": _text(until),
            "buckets": [_text(edge) for edge in bounds[:-1]],
            "series": _series([tuple(c) for c in cells], buckets, hosts), **tables}


def _series(cells: list[tuple[Any, ...]], buckets: int,
            hosts: int) -> list[dict[str, Any]]:
    """Per host (the busiest `hosts`, the rest together), allowed and denied per bucket."""
    totals: dict[str, int] = {}
    for _bucket, host, kind, n in cells:
        if kind != "other":
            totals[host or "(none)"] = totals.get(host or "(none)", 0) + n
    busiest = sorted(totals, key=lambda h: (-totals[h], h))
    shown = busiest[:hosts] if len(busiest) <= hosts else busiest[:hosts - 1]
    counts: dict[str, dict[str, list[int]]] = {
        h: {"allowed": [0] * buckets, "denied": [0] * buckets}
        for h in [*shown, *([OTHER] if len(busiest) > len(shown) else [])]}
    for index, host, kind, n in cells:
        if kind == "other":
            continue
        name = host or "(none)"
        counts[name if name in shown else OTHER][kind][int(index)] += n
    return [{"host": host, **both} for host, both in counts.items()]


def _grouped(session: Session, base: Any, column: str, top: int) -> list[dict[str, Any]]:
    """Allowed and denied counts per value of `column`, busiest first."""
    allowed = func.sum(case((base.c.decision.in_(ALLOWED), 1), else_=0))
    denied = func.sum(case((base.c.decision == "deny", 1), else_=0))
    stmt = select(base.c[column], allowed, denied, func.count()).group_by(base.c[column]) \
        .order_by(func.count().desc(), base.c[column]).limit(top)
    return [{column: value, "allowed": int(a or 0), "denied": int(d or 0), "total": n}
            for value, a, d, n in session.exec(stmt).all()]


def _top(session: Session, base: Any, column: str, where: Any,
         top: int) -> list[dict[str, Any]]:
    stmt = select(base.c[column], func.count()).where(where).group_by(base.c[column]) \
        .order_by(func.count().desc(), base.c[column]).limit(top)
    return [{column: value, "count": n} for value, n in session.exec(stmt).all()]


def _text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
