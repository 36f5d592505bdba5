"""The YAML shape of a policy file (version 1). Separate from the compiled model in matcher.py."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from policies.hosts import HostPattern, parse_pattern


def _host(text: str) -> str:
    return str(parse_pattern(text))


def _port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1-65535")
    return port


HostText = Annotated[str, AfterValidator(_host)]
Port = Annotated[int, AfterValidator(_port)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleSpec(_Strict):
    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    description: str = ""
    action: Literal["allow", "deny"] = "allow"
    hosts: list[HostText] = Field(default_factory=list)
    ports: list[Port] = Field(default_factory=list)

    def host_patterns(self) -> list[HostPattern]:
        return [parse_pattern(h) for h in self.hosts]


class PolicySpec(_Strict):
    version: Literal[1]
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    rules: list[RuleSpec] = Field(default_factory=list)
