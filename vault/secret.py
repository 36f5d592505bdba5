"""A secret value that cannot be printed by accident."""

from __future__ import annotations

import hmac


class SecretValue:
    """Holds a secret. Its repr and str are redacted; only `reveal()` gives the value, and
    only the injector and the response scrubber call it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def equals(self, other: str) -> bool:
        """Constant-time comparison."""
        return hmac.compare_digest(self._value.encode(), other.encode())

    def __repr__(self) -> str:
        return "SecretValue(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:  # never pickled into a dump
        raise TypeError("SecretValue cannot be pickled")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and self.equals(other._value)

    def __hash__(self) -> int:
        return hash(("SecretValue", len(self._value)))
