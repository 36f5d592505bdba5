"""Where policies come from: by name from the policy directory, or by file path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.errors import BadRequest, NotFound
from policies.loader import POLICY_SUFFIXES, PolicyError, load_file
from policies.matcher import CompiledPolicy


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    policy: CompiledPolicy
    source: Path


class PolicyStore:
    def __init__(self, policy_dir: Path) -> None:
        self.policy_dir = policy_dir

    def files(self) -> list[Path]:
        if not self.policy_dir.is_dir():
            return []
        return sorted(p for p in self.policy_dir.iterdir() if p.suffix in POLICY_SUFFIXES)

    def load(self, ref: str) -> LoadedPolicy:
        """`ref` is a policy file path (contains a slash or ends in .yaml) or a policy name."""
        if "/" in ref or ref.endswith(POLICY_SUFFIXES):
            return self._load_path(Path(ref))
        for path in self.files():
            loaded = self._load_path(path, quiet=True)
            if loaded is not None and loaded.policy.name == ref:
                return loaded
        raise NotFound(f"no policy named {ref!r} in {self.policy_dir}",
                       "list policies with: ls " + str(self.policy_dir))

    def _load_path(self, path: Path, quiet: bool = False) -> LoadedPolicy:
        try:
            return LoadedPolicy(load_file(path), path.resolve())
        except PolicyError as e:
            if quiet:
                return None  # type: ignore[return-value]
            raise BadRequest(f"invalid policy:\n{e}",
                             "fix the listed problems; `sandgate policy check` shows them") from e
