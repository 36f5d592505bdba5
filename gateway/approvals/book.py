"""The main process's book of approvals: pending requests in the database (the one truth,
shared by every gateway on it) and, for the requests this gateway holds, a future each that
a decision resolves at once.

`ask` runs on the main event loop (the hub's answer to a worker): it never blocks the loop
(database work goes to a thread) and holds only the asking flow. Every held request has an
approval of its own (two requests alike in path may differ in query and body, and a person
allows what they were shown), and the cap counts held requests. `decide` runs in an API
thread. A decision is a conditional update (`pending` -> `allowed` | `denied`), so of two
deciders, or a decider and the timeout, exactly one wins; the loser is told. `--for policy`
writes its rule only once its decision won.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from gateway.approvals.ask import Ask, Outcome, Scope, Status
from gateway.approvals.models import ApprovalRecord
from gateway.approvals.webhook import Webhook
from gateway.clock import utcnow
from gateway.errors import NotFound, SandgateError
from policies.decision import Reason

logger = logging.getLogger(__name__)

POLL = 1.0            # how often a held request looks for a decision made by another gateway
MAX_PENDING = 16      # held requests per sandbox: it cannot flood the people who approve


class Conflict(SandgateError):
    status = 409


@dataclass(eq=False)
class _Held:
    sandbox: str
    future: asyncio.Future[Outcome]
    id: int = 0
    deadline: float = 0.0


type Recorder = Callable[[dict[str, Any]], None]
# `--for policy`: (approval, caller name) -> checks made, the write to run once the decision
# won: () -> (policy revision, rule id)
type PolicyWrite = Callable[[], tuple[int | None, str]]
type PolicyWriter = Callable[[ApprovalRecord, str], PolicyWrite]


def _who(record: ApprovalRecord) -> str | None:
    return record.decided_by


def outcome_of(record: ApprovalRecord) -> Outcome | None:
    """The answer a decided approval gives; None while pending."""
    if record.status == Status.ALLOWED:
        return Outcome(True, Reason.APPROVED, record.id, _who(record), record.scope)
    if record.status == Status.DENIED:
        return Outcome(False, Reason.APPROVAL_DENIED, record.id, _who(record))
    if record.status == Status.REVOKED:   # taken back before this request heard of it
        return Outcome(False, Reason.APPROVAL_DENIED, record.id, record.revoked_by)
    if record.status == Status.EXPIRED:
        return Outcome(False, Reason.APPROVAL_TIMEOUT, record.id,
                       detail="nobody decided in time")
    return None


class ApprovalBook:
    def __init__(self, engine: Engine, record: Recorder, *, gateway_id: str, timeout: float,
                 webhook: Webhook | None = None, write_policy: PolicyWriter | None = None,
                 max_pending: int = MAX_PENDING) -> None:
        self.engine = engine
        self.record = record
        self.gateway_id = gateway_id
        self.timeout = timeout
        self.webhook = webhook
        self.write_policy = write_policy
        self.max_pending = max_pending
        self.loop: asyncio.AbstractEventLoop | None = None
        self._held: list[_Held] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # the held request's side (main event loop)
    async def ask(self, ask: Ask) -> Outcome:
        self.loop = asyncio.get_running_loop()
        standing = await asyncio.to_thread(self._standing, ask)
        if standing is not None:
            return Outcome(True, Reason.APPROVED, standing.id, standing.decided_by,
                           standing.scope)
        # counted and taken with no await in between: the cap holds for requests arriving at once
        if sum(1 for held in self._held if held.sandbox == ask.sandbox) >= self.max_pending:
            return Outcome(False, Reason.APPROVAL_DENIED,
                           detail=f"{self.max_pending} requests of this sandbox already "
                                  "wait for approval")
        held = _Held(ask.sandbox, self.loop.create_future())
        self._held.append(held)
        self._spawn(self._watch(ask, held))
        return await asyncio.shield(held.future)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, ask: Ask, held: _Held) -> None:
        """The approval recorded (and the webhook told), then a wait until it is decided
        here, decided elsewhere (the database says so), or expired."""
        outcome: Outcome | None = None
        try:
            record = await asyncio.to_thread(self._insert, ask)
            assert record.id is not None
            held.id, held.deadline = record.id, time.monotonic() + self.timeout
            if self.webhook is not None:
                self._spawn(self.webhook.send(record))
            while outcome is None:
                remaining = held.deadline - time.monotonic()
                if remaining <= 0:
                    outcome = await asyncio.to_thread(self._expire, held.id)
                    break
                try:
                    outcome = await asyncio.wait_for(asyncio.shield(held.future),
                                                     min(remaining, POLL))
                except TimeoutError:
                    outcome = outcome_of(await asyncio.to_thread(self._get, held.id))
        except Exception:
            logger.exception("approval %d failed", held.id)
            outcome = Outcome(False, Reason.APPROVAL_DENIED, held.id or None,
                              detail="the gateway failed to wait for the decision")
        finally:
            self._held.remove(held)
        if not held.future.done():
            held.future.set_result(outcome)

    def _wake(self, approval: int, outcome: Outcome) -> None:
        for held in self._held:
            if held.id == approval and not held.future.done():
                held.future.set_result(outcome)

    # database work (threads)
    def _insert(self, ask: Ask) -> ApprovalRecord:
        now = utcnow()
        record = ApprovalRecord(
            created_at=now, expires_at=now + timedelta(seconds=self.timeout),
            gateway_id=self.gateway_id, sandbox_id=ask.sandbox, owner=ask.owner,
            policy=ask.policy, policy_version=ask.policy_version, rule=ask.rule,
            scheme=ask.scheme, host=ask.host, port=ask.port, method=ask.method, path=ask.path,
            query=ask.query or None, body_bytes=ask.body, status=Status.PENDING)
        with Session(self.engine) as session:
            session.add(record)
            session.commit()
            session.refresh(record)
            return record

    def _get(self, approval: int) -> ApprovalRecord:
        with Session(self.engine) as session:
            record = session.get(ApprovalRecord, approval)
        if record is None:
            raise NotFound(f"no approval {approval}", "sandgate approvals list shows them")
        return record

    def _standing(self, ask: Ask) -> ApprovalRecord | None:
        """An earlier `--for sandbox` allow, not revoked, of the same request (scheme
        included: an allow over https is no allow in clear text). A `--for policy` allow
        stands as its rule, while the policy keeps it: the policy decides, not this book."""
        query = select(ApprovalRecord).where(
            ApprovalRecord.sandbox_id == ask.sandbox, ApprovalRecord.scheme == ask.scheme,
            ApprovalRecord.host == ask.host, ApprovalRecord.port == ask.port,
            ApprovalRecord.method == ask.method, ApprovalRecord.path == ask.path,
            ApprovalRecord.status == Status.ALLOWED,
            ApprovalRecord.scope == str(Scope.SANDBOX)).limit(1)
        with Session(self.engine) as session:
            return session.exec(query).first()

    def _settle(self, approval: int, status: Status, *, was: Status = Status.PENDING,
                **values: Any) -> bool:
        """`was` -> `status`, unless someone else settled it first."""
        statement = update(ApprovalRecord).where(
            col(ApprovalRecord.id) == approval,
            col(ApprovalRecord.status) == was).values(status=status, **values)
        with Session(self.engine) as session:
            changed = session.execute(statement).rowcount   # type: ignore[attr-defined]
            session.commit()
        return bool(changed)

    def _expire(self, approval: int) -> Outcome:
        if self._settle(approval, Status.EXPIRED, decided_at=utcnow()):
            record = self._get(approval)
            self._audit(record, allowed=False, reason=Reason.APPROVAL_TIMEOUT, actor=None,
                        note=f"approval {approval}: nobody decided within "
                             f"{self.timeout:g} s")
            outcome = outcome_of(record)
            assert outcome is not None
            return outcome
        decided = outcome_of(self._get(approval))   # decided just before the time was up
        assert decided is not None
        return decided

    # the deciding side (API threads)
    def decide(self, approval: int, *, allow: bool, scope: Scope, who: str) -> dict[str, Any]:
        """Allow (for `scope`) or deny a pending approval; 409 when it is not pending."""
        record = self._get(approval)
        if record.status != Status.PENDING:
            raise Conflict(f"approval {approval} is already {record.status}",
                           "only a pending approval can be decided")
        write = None
        if allow and scope == Scope.POLICY:
            if self.write_policy is None:
                raise SandgateError("this gateway cannot write policies")
            write = self.write_policy(record, who)      # refuses what it could not write
        status = Status.ALLOWED if allow else Status.DENIED
        # settled first: a rule is written only for a decision that won (not for one the
        # timeout or another decider beat)
        if not self._settle(approval, status, scope=str(scope) if allow else None,
                            decided_by=who, decided_at=utcnow()):
            raise Conflict(f"approval {approval} was decided meanwhile",
                           "sandgate approvals list shows how")
        failed, extra = None, ""
        if write is not None:
            failed, extra = self._write(approval, write)
        record = self._get(approval)
        verb = f"allowed for {record.scope}" if allow else "denied"
        self._audit(record, allowed=allow,
                    reason=Reason.APPROVED if allow else Reason.APPROVAL_DENIED, actor=who,
                    note=f"approval {approval} {verb}{extra}")
        outcome = outcome_of(record)
        if self.loop is not None and outcome is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._wake, approval, outcome)
        if failed is not None:
            raise SandgateError(f"approval {approval} was allowed once only: the rule could "
                                f"not be written ({failed})", "write it by hand, or allow the "
                                "next such request --for sandbox")
        return record.public()

    def _write(self, approval: int, write: PolicyWrite) -> tuple[str | None, str]:
        """`--for policy`, after its decision won: (why it failed, the audit note's end). A
        rule that could not be written leaves the allow for this one request."""
        try:
            revision, rule = write()
        except Exception as e:   # the store's own errors, or the database's
            logger.warning("approval %d: the policy rule could not be written: %s", approval, e)
            self._update(approval, scope=str(Scope.ONCE))
            return str(e), f" (the rule could not be written: {e})"
        self._update(approval, revision=revision, policy_rule=rule)
        return None, f"; rule {rule} written as policy revision {revision}"

    def _update(self, approval: int, **values: Any) -> None:
        statement = update(ApprovalRecord).where(
            col(ApprovalRecord.id) == approval).values(**values)
        with Session(self.engine) as session:
            session.execute(statement)
            session.commit()

    def revoke(self, approval: int, *, who: str) -> dict[str, Any]:
        """Take back a `--for sandbox` allow: the sandbox's next such request is asked about
        again. (A `--for policy` allow is taken back by removing its rule from the policy.)"""
        record = self._get(approval)
        if record.status != Status.ALLOWED or record.scope != Scope.SANDBOX:
            raise Conflict(f"approval {approval} is {record.status}"
                           f"{f' for {record.scope}' if record.scope else ''}, not a standing "
                           "allow", "only an approval allowed --for sandbox can be revoked; "
                                    "a --for policy one by removing its rule from the policy")
        if not self._settle(approval, Status.REVOKED, was=Status.ALLOWED, revoked_by=who,
                            revoked_at=utcnow()):
            raise Conflict(f"approval {approval} was revoked meanwhile")
        record = self._get(approval)
        self._audit(record, allowed=False, reason=Reason.APPROVAL_DENIED, actor=who,
                    note=f"approval {approval} (for sandbox) revoked: such requests are "
                         "asked about again")
        return record.public()

    def _audit(self, record: ApprovalRecord, *, allowed: bool, reason: str,
               actor: str | None, note: str) -> None:
        self.record(dict(
            time=time.time(), sandbox_id=record.sandbox_id, owner=record.owner,
            policy=record.policy, policy_version=record.policy_version, rule=record.rule,
            decision="allow" if allowed else "deny", reason=str(reason), protocol="approval",
            method=record.method, scheme=record.scheme, host=record.host, port=record.port,
            path=record.path, actor=actor, error=note))

    def list(self, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        query = select(ApprovalRecord).order_by(col(ApprovalRecord.id).desc()).limit(limit)
        if status:
            query = query.where(ApprovalRecord.status == status)
        with Session(self.engine) as session:
            return [r.public() for r in session.exec(query).all()]

    def get(self, approval: int) -> dict[str, Any]:
        return self._get(approval).public()

    def reconcile(self) -> int:
        """At start-up: what this gateway held when it stopped is held no more."""
        statement = update(ApprovalRecord).where(
            col(ApprovalRecord.gateway_id) == self.gateway_id,
            col(ApprovalRecord.status) == Status.PENDING).values(
                status=Status.EXPIRED, decided_at=datetime.now(UTC))
        with Session(self.engine) as session:
            changed = int(session.execute(statement).rowcount)   # type: ignore[attr-defined]
            session.commit()
        return changed
