"""The gateway's error taxonomy. Each error carries a message a person can act on; the CLI
prints it as one line with exit status 2, the API maps it to a status in one function."""

from __future__ import annotations


class SandgateError(Exception):
    """Base: something the user or operator can fix. `hint` says how."""

    status = 500

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class BadRequest(SandgateError):
    status = 422


class NotFound(SandgateError):
    status = 404


class Refused(SandgateError):
    """The caller may not do this with what it named (a pod naming a policy or secret its
    Kubernetes namespace is not allowed to use)."""

    status = 403


class NotReady(SandgateError):
    """The host cannot run sandboxes yet (not root, missing runtime, firewall failure)."""

    status = 503


class Unavailable(NotReady):
    """Not yet, but soon: the same request will succeed (503 with `Retry-After`)."""

    def __init__(self, message: str, hint: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after
