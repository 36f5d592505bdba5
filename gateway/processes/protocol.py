"""The messages between the main process and its proxy workers, defined once for both ends.

They travel as JSON lines on the hub's Unix socket (gateway.processes.hub), `op` naming the
type. A worker opens with `Hello`, then *asks* (a question carries an `id`; the hub replies
with `Answer(re=id)`) and *tells*. The hub tells every worker of each registry change; `Add`,
`Remove` and `VaultChanged` carry an `ack` number that each worker returns in `Ack`, so a
sandbox is known to all workers before it starts and forgotten by all before its address is
reused.

    worker -> hub   Hello, Acquire?, Admit?, Budget?, NameFor?, Mint?, Approve?, Release, Charge,
                    Spend, Quarantine, Record, Active, Ready, Ack; Lease?, Unlease
    hub -> worker   Answer, Add, Remove, Quarantined, Mapped, VaultChanged, Synced

After `Hello` the hub sends an `Add` for every live sandbox, then `Synced`: a worker that has
acknowledged it and sent `Ready` (its proxy listens) counts as ready
(gateway.readiness).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

from gateway.approvals.ask import Ask
from gateway.audit.models import COLUMNS
from policies.schema import Limits


class Op(enum.StrEnum):
    HELLO = "hello"
    ACQUIRE = "acquire"
    ADMIT = "admit"
    BUDGET = "budget"
    SPEND = "spend"
    NAME_FOR = "name_for"
    MINT = "mint"
    APPROVE = "approve"
    RELEASE = "release"
    CHARGE = "charge"
    QUARANTINE = "quarantine"
    RECORD = "record"
    ACTIVE = "active"
    READY = "ready"
    ACK = "ack"
    ANSWER = "answer"
    ADD = "add"
    REMOVE = "remove"
    QUARANTINED = "quarantined"
    MAPPED = "mapped"
    VAULT_CHANGED = "vault_changed"
    SYNCED = "synced"
    LEASE = "lease"
    UNLEASE = "unlease"


class ProtocolError(ValueError):
    """A line that is not a message of this protocol."""


class _Message:
    __slots__ = ()
    op: ClassVar[Op]     # names the message's type on the wire


_TYPES: dict[str, type[Any]] = {}


@typing.dataclass_transform(frozen_default=True)
def message[T: _Message](op: Op) -> Callable[[type[T]], type[T]]:
    """A message type: a frozen dataclass that travels as `op`."""
    def define(cls: type[T]) -> type[T]:
        cls.op = op
        made = dataclass(frozen=True, slots=True)(cls)
        _TYPES[op] = made
        return made
    return define


# worker -> hub
@message(Op.HELLO)
class Hello(_Message):
    """First line of a worker's connection."""

    worker: int
    pid: int


@message(Op.ACQUIRE)
class Acquire(_Message):
    """Question: count one more open connection for the sandbox, unless it is at `limit`."""

    id: int
    sandbox: str
    limit: int


@message(Op.ADMIT)
class Admit(_Message):
    """Question: take a request token from the rule's bucket (and check its byte budget)."""

    id: int
    sandbox: str
    rule: str
    limits: Limits


@message(Op.BUDGET)
class BudgetAsk(_Message):
    """Question: count a request against the budgets that apply to it, reserving `expected`
    bytes (its head and announced body) and leasing up to `lease` more for a body of unknown
    length (gateway.processes.budgets.Ledger.admit). `caps`: Cap fields by name. The answer
    is an Allowance's fields."""

    id: int
    sandbox: str
    policy: str
    caps: list[dict[str, Any]]
    expected: int
    lease: int = 0


@message(Op.SPEND)
class Spend(_Message):
    """Bytes a stream sent beyond what it leased (on credit, at most one lease chunk)."""

    sandbox: str
    policy: str
    caps: list[dict[str, Any]]
    size: int


@message(Op.NAME_FOR)
class NameFor(_Message):
    """Question: the name behind one of the sandbox's synthetic addresses, if any."""

    id: int
    sandbox: str
    address: str


@message(Op.MINT)
class Mint(_Message):
    """Question: a provider secret's value, as the main process's broker holds or mints it
    (gateway.providers.broker). `generation`: the version of the secret the worker knows;
    `narrow`: the rule's narrowing (policies.schema.Narrow, as JSON data). The answer is
    {"value": str | None, "fresh_until": epoch seconds, "error": str | None}: it travels
    only on this socket, which only root can open."""

    id: int
    secret: str
    generation: str
    narrow: dict[str, Any] | None
    sandbox: str


@message(Op.APPROVE)
class Approve(_Message):
    """Question: may this held request go? (an `ask` rule). Answered when a person decides
    or the time is up (gateway.approvals.book), with the fields of approvals.ask.Outcome;
    the worker's other messages go on meanwhile."""

    id: int
    ask: Ask


@message(Op.RELEASE)
class Release(_Message):
    """One of the sandbox's connections closed."""

    sandbox: str


@message(Op.CHARGE)
class Charge(_Message):
    """Bytes an allowed request or stream moved, for the rule's bytes-per-minute limit."""

    sandbox: str
    rule: str
    limits: Limits
    size: int


@message(Op.QUARANTINE)
class Quarantine(_Message):
    """The sandbox tried to send a secret where it may not go: nothing more goes out."""

    sandbox: str


# The columns of a worker's audit row, in the order a Record carries them: every column of
# the audit log but those the writer fills in (gateway.audit.writer: its gateway, the chain).
RECORD_COLUMNS = tuple(name for name in COLUMNS
                       if name not in ("gateway_id", "seq", "prev_hash", "hash"))
_RECORD_DEFAULTS = tuple((name, COLUMNS[name]) for name in RECORD_COLUMNS)
_RECORD_NAMES = frozenset(RECORD_COLUMNS)


def record_values(row: dict[str, Any]) -> list[Any]:
    """A row as a Record carries it: its values in RECORD_COLUMNS order, a column it does
    not set as the audit log's default. Raises TypeError for a name that is no column."""
    if not row.keys() <= _RECORD_NAMES:
        raise TypeError(f"unknown audit fields {sorted(row.keys() - _RECORD_NAMES)}")
    return [row.get(name, default) for name, default in _RECORD_DEFAULTS]


def record_row(values: list[Any]) -> dict[str, Any]:
    """The row back from record_values (the main process's end)."""
    return dict(zip(RECORD_COLUMNS, values, strict=True))


@message(Op.RECORD)
class Record(_Message):
    """Audit rows, batched: what a worker recorded in one turn of its event loop (or a
    full batch), each row a list of values in RECORD_COLUMNS order (names are not repeated
    on every row); `time` in epoch seconds."""

    rows: list[list[Any]]

    def __post_init__(self) -> None:
        if any(len(row) != len(RECORD_COLUMNS) for row in self.rows):
            raise ValueError(f"an audit row has {len(RECORD_COLUMNS)} values")


@message(Op.ACTIVE)
class Active(_Message):
    """The sandbox used the network (for the idle timeout)."""

    sandbox: str


@message(Op.READY)
class Ready(_Message):
    """The worker's proxy listens."""



@message(Op.ACK)
class Ack(_Message):
    """The worker applied the change numbered `ack`."""

    ack: int


# hub -> worker
@message(Op.ANSWER)
class Answer(_Message):
    """The reply to question `re`."""

    re: int
    value: Any


@dataclass(frozen=True, slots=True)
class SandboxSnapshot:
    """What a worker needs to build its replica of a sandbox."""

    id: str
    ip: str
    policy: str                     # the policy file's path
    network: str                    # the sandbox's synthetic slice, as a CIDR
    assignments: dict[str, str]     # synthetic address -> name
    env: dict[str, str]
    secrets: dict[str, str]         # secret name -> placeholder
    owner: str | None
    quarantined: bool
    pod: str | None = None
    pod_uid: str | None = None


@message(Op.ADD)
class Add(_Message):
    sandbox: SandboxSnapshot
    ack: int | None = None


@message(Op.REMOVE)
class Remove(_Message):
    sandbox: str
    ack: int | None = None


@message(Op.QUARANTINED)
class Quarantined(_Message):
    sandbox: str


@message(Op.MAPPED)
class Mapped(_Message):
    """The main process's DNS gave `name` the synthetic `address` of the sandbox."""

    sandbox: str
    address: str
    name: str


@message(Op.VAULT_CHANGED)
class VaultChanged(_Message):
    """Secrets or the master key changed: reopen the vault."""

    ack: int | None = None


@message(Op.SYNCED)
class Synced(_Message):
    """Every sandbox live when the worker connected has been sent: acknowledge it."""

    ack: int | None = None


@message(Op.LEASE)
class Lease(_Message):
    """Question: up to `want` more bytes for a stream, as far as its budgets have them left
    (gateway.processes.budgets.Ledger.lease). The answer is a Grant's fields."""

    id: int
    sandbox: str
    policy: str
    caps: list[dict[str, Any]]
    want: int


@message(Op.UNLEASE)
class Unlease(_Message):
    """Bytes a stream leased (at `at`, epoch seconds) and did not send, given back."""

    sandbox: str
    policy: str
    caps: list[dict[str, Any]]
    size: int
    at: float


type Message = (Hello | Acquire | Admit | BudgetAsk | Spend | NameFor | Mint | Approve
                | Release | Charge | Quarantine | Record | Active | Ready | Ack | Answer | Add
                | Remove | Quarantined | Mapped | VaultChanged | Synced | Lease | Unlease)
type Question = Acquire | Admit | BudgetAsk | NameFor | Mint | Approve | Lease

def _nested(cls: type[Any]) -> dict[str, type[Any]]:
    """Fields of `cls` whose values are models or dataclasses (rebuilt on decoding)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if isinstance(hints[f.name], type)
            and (issubclass(hints[f.name], BaseModel) or dataclasses.is_dataclass(hints[f.name]))}


_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _TYPES.values()}
_NESTED = {cls: _nested(cls) for cls in _TYPES.values()}


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def encode(message: Message) -> bytes:
    data = {"op": str(message.op)}
    for name in _FIELDS[type(message)]:
        data[name] = _plain(getattr(message, name))
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    """Raises ProtocolError for anything that is not one of the messages above."""
    try:
        data = json.loads(line)
        cls = _TYPES[data.pop("op")]
        for name, kind in _NESTED[cls].items():
            data[name] = (kind.model_validate(data[name]) if issubclass(kind, BaseModel)
                          else kind(**data[name]))
        message: Message = cls(**data)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        # nothing of the line itself: an answer may carry a minted credential
        raise ProtocolError(f"not a hub message ({len(line)} bytes: {type(e).__name__})") \
            from None
    return message
