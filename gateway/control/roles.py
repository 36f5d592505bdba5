"""Who may do what through the control API: roles, the scopes they grant, and the caller.
No database here: the CLI lists roles without loading one."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    ADMIN = "admin"          # everything
    SECURITY = "security"    # policies, secrets, audit
    OPERATOR = "operator"    # sandboxes, and the audit of its own sandboxes
    AUDITOR = "auditor"      # read the audit log


class Scope(enum.StrEnum):
    SANDBOXES = "sandboxes"
    POLICIES = "policies"
    SECRETS = "secrets"
    AUDIT = "audit"          # the whole audit log
    OWN_AUDIT = "own_audit"  # the audit rows of one's own sandboxes
    VAULT = "vault"


GRANTS: dict[Role, frozenset[Scope]] = {
    Role.ADMIN: frozenset(Scope),
    Role.SECURITY: frozenset({Scope.POLICIES, Scope.SECRETS, Scope.AUDIT, Scope.OWN_AUDIT,
                              Scope.VAULT}),
    Role.OPERATOR: frozenset({Scope.SANDBOXES, Scope.OWN_AUDIT}),
    Role.AUDITOR: frozenset({Scope.AUDIT, Scope.OWN_AUDIT}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller. `id` is unique (`token:<id>`, or `local`) and owns sandboxes; `name` is a
    label that several tokens may share."""

    id: str
    name: str
    role: Role

    def may(self, scope: Scope) -> bool:
        return scope in GRANTS[self.role]


LOCAL_ROOT = Principal("local", "local", Role.ADMIN)  # whoever reaches the root-only socket
