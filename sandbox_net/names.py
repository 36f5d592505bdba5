"""Names of everything sandbox_net creates, derived from one per-installation prefix.

The prefix keeps parallel installations (and test runs) apart: a gateway only ever touches
namespaces, links and tables that carry its own prefix.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

IFNAMSIZ = 15  # Linux interface names are at most 15 bytes
ID_LENGTH = 8
_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,3}$")
_ID = re.compile(rf"^[0-9a-f]{{{ID_LENGTH}}}$")


def new_sandbox_id() -> str:
    return secrets.token_hex(ID_LENGTH // 2)


def valid_sandbox_id(text: str) -> bool:
    return bool(_ID.match(text))


@dataclass(frozen=True, slots=True)
class Naming:
    prefix: str = "sg"

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ValueError(
                f"name prefix {self.prefix!r} must be 1-4 lower-case letters or digits, "
                "starting with a letter"
            )

    @property
    def table(self) -> str:
        return "sandgate" if self.prefix == "sg" else f"sandgate_{self.prefix}"

    @property
    def link_glob(self) -> str:
        """nftables wildcard matching every host-side sandbox link."""
        return f"{self.prefix}h-*"

    def netns(self, sandbox_id: str) -> str:
        return f"{self.prefix}-{sandbox_id}"

    def host_link(self, sandbox_id: str) -> str:
        return f"{self.prefix}h-{sandbox_id}"

    def peer_link(self, sandbox_id: str) -> str:
        return f"{self.prefix}p-{sandbox_id}"

    def id_from_netns(self, name: str) -> str | None:
        head = f"{self.prefix}-"
        rest = name.removeprefix(head)
        return rest if name.startswith(head) and valid_sandbox_id(rest) else None

    def id_from_link(self, name: str) -> str | None:
        for head in (f"{self.prefix}h-", f"{self.prefix}p-"):
            rest = name.removeprefix(head)
            if name.startswith(head) and valid_sandbox_id(rest):
                return rest
        return None
