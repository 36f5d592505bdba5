"""Where sandboxes' policies come from, and hot reload.

The store is a directory in the data dir (`SANDGATE_POLICY_DIR`, default HOME/policies):
policies written through the API land there, and hand edits there are hot-reloaded. The
policies packaged with sandgate (`default`, the examples) are read-only defaults behind it:
a name the store does not hold is looked up among them, and a store policy of the same name
overrides one. `extends` looks next to the extending file, then in the store, then among the
packaged policies.

A sandbox refers to a policy by name or by file path. All
sandboxes on the same file share one PolicyHandle; `refresh` (called about twice a second by
the gateway) reloads a handle when its file or a sibling it may extend changes. A valid change
replaces `handle.policy` in one assignment, so every new connection and request sees either
the old or the new version; an invalid one is rejected, the last good version stays active,
and the error is kept for `sandgate policy status`.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import BadRequest, NotFound
from policies import PACKAGED_DIRS
from policies.loader import (
    PolicyError,
    compose,
    directory_resolver,
    load_directory,
    load_file,
    parse,
    policy_files,
    read,
    version_of,
)
from policies.matcher import CompiledPolicy
from policies.report import mcp_call, request_from_url, trial
from policies.schema import NAME

logger = logging.getLogger(__name__)

type Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(directory: Path) -> Fingerprint:
    """Cheap change detection: name, mtime and size of every policy file in `directory`."""
    entries = []
    for path in policy_files(directory):
        try:
            stat = path.stat()
        except OSError:
            continue
        entries.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


def _settle() -> None:
    """Move what is alive now (compiled policies above all) out of the cyclic collector's way:
    a 100,000-rule policy otherwise makes every full collection, and so the p99 of decisions,
    slow. Reference counting still frees replaced versions."""
    gc.collect()
    gc.freeze()


@dataclass
class PolicyHandle:
    path: Path
    policy: CompiledPolicy
    fingerprint: Fingerprint
    error: str | None = None
    loaded_at: float = field(default_factory=time.time)

    def status(self) -> dict[str, Any]:
        return {"name": self.policy.name, "version": self.policy.version,
                "source": str(self.path), "mode": self.policy.spec.mode,
                "loaded_at": self.loaded_at, "error": self.error}


class PolicyStore:
    def __init__(self, policy_dir: Path, defaults: Sequence[Path] = PACKAGED_DIRS) -> None:
        self.policy_dir = policy_dir
        self.defaults = [d for d in defaults if d.resolve() != policy_dir.resolve()]
        self._handles: dict[Path, PolicyHandle] = {}
        self._lock = threading.Lock()
        self._directory_errors: list[str] = []
        self._directory_print: Fingerprint | None = None
        # told of every change made through put/delete (gateway.control.policy_sync shares them)
        self.publish: Callable[[str, str | None], object] = lambda _name, _text: None

    @property
    def search(self) -> list[Path]:
        """Where names are looked up, in order: the store, then the packaged defaults."""
        return [self.policy_dir, *self.defaults]

    def path_for(self, ref: str) -> Path:
        """`ref` is a policy file path (contains a slash or ends in .yaml) or a policy name."""
        if "/" in ref or ref.endswith((".yaml", ".yml")):
            return Path(ref).resolve()
        for directory in self.search:
            if found := _named(directory, ref):
                return found
        raise NotFound(f"no policy named {ref!r} in {self.policy_dir} or among the packaged "
                       "policies", f"PUT it to /v1/policies/{ref}, add {ref}.yaml to "
                       f"{self.policy_dir}, or pass a policy file path")

    def load(self, path: Path) -> CompiledPolicy:
        """One policy file, its `extends` resolved next to it, then in the store, then among
        the packaged policies. Raises PolicyError."""
        return load_file(path, also=self.search)

    def is_packaged(self, path: Path) -> bool:
        return any(path.parent == d.resolve() for d in self.defaults)

    def acquire(self, ref: str) -> PolicyHandle:
        """The shared handle for `ref`, loading it if needed. Raises BadRequest/NotFound."""
        path = self.path_for(ref)
        with self._lock:
            handle = self._handles.get(path)
            if handle is not None:
                return handle
            print_ = fingerprint(path.parent)
            try:
                policy = self.load(path)
            except PolicyError as e:
                raise BadRequest(f"invalid policy:\n{e}",
                                 "fix the listed problems; `sandgate policy check` shows them"
                                 ) from e
            handle = self._handles[path] = PolicyHandle(path, policy, print_)
        _settle()
        return handle

    def refresh(self) -> list[PolicyHandle]:
        """Reload changed policies; return the handles whose active version changed."""
        changed = []
        with self._lock:
            handles = list(self._handles.values())
        for handle in handles:
            current = fingerprint(handle.path.parent)
            if current == handle.fingerprint:
                continue
            handle.fingerprint = current
            if self._reload(handle):
                changed.append(handle)
        self._check_directory()
        return changed

    def _reload(self, handle: PolicyHandle) -> bool:
        if not handle.path.exists():
            handle.error = f"{handle.path}: file removed; the last good version stays active"
            logger.error("policy %s", handle.error)
            return False
        try:
            policy = self.load(handle.path)
        except PolicyError as e:
            handle.error = str(e)
            logger.error("policy change rejected, keeping version %s:\n%s",
                         handle.policy.version, e)
            return False
        handle.error = None
        if policy.version == handle.policy.version:
            return False
        handle.policy = policy  # one assignment: requests see the old or the new version
        handle.loaded_at = time.time()
        _settle()
        logger.info("policy %s now at version %s", policy.name, policy.version)
        return True

    def _check_directory(self) -> None:
        current = fingerprint(self.policy_dir)
        if current == self._directory_print:
            return
        self._directory_print = current
        _, errors = load_directory(self.policy_dir, also=self.defaults)
        self._directory_errors = [str(e) for e in errors]

    # the policy directory as a store (the control API's /v1/policies)
    def every_policy(self) -> dict[str, CompiledPolicy]:
        """Every valid policy by name: the store's, then the packaged ones it does not
        override."""
        found: dict[str, CompiledPolicy] = {}
        for directory in reversed(self.search):
            found.update(load_directory(directory, also=self.search)[0])
        return found

    def catalogue(self) -> list[dict[str, Any]]:
        """Every policy file in the store, valid or not, and the packaged policies it does
        not override (read-only)."""
        entries: dict[str, dict[str, Any]] = {}
        for directory in reversed(self.search):
            read_only = directory != self.policy_dir
            policies, errors = load_directory(directory, also=self.search)
            for p in policies.values():
                entries[p.name] = {"name": p.name, "version": p.version, "mode": p.spec.mode,
                                   "description": p.spec.description, "rules": len(p.rules),
                                   "read_only": read_only, "error": None}
            failed: dict[str, list[str]] = {}
            for error in errors:
                failed.setdefault(Path(error.file).stem, []).append(str(error))
            for name, lines in failed.items():
                if name not in policies:
                    entries[name] = {"name": name, "version": None, "read_only": read_only,
                                     "error": "\n".join(lines)}
        return sorted(entries.values(), key=lambda e: str(e["name"]))

    def _file(self, name: str) -> Path:
        if not re.match(NAME, name):
            raise BadRequest(f"invalid policy name {name!r}",
                             "letters, digits, '.', '_' and '-', starting with a letter or digit")
        return self.policy_dir / f"{name}.yaml"

    def get(self, name: str) -> dict[str, Any]:
        path = self.path_for(name)
        text = path.read_text()
        return {"name": name, "yaml": text, "version": version_of(text), "file": str(path),
                "read_only": self.is_packaged(path)}

    def put(self, name: str, text: str) -> dict[str, Any]:
        """Validate with the same errors as `sandgate policy check` (422 listing them), then
        write atomically; running sandboxes on it pick the change up by hot reload."""
        path = self._file(name)
        source = f"{name}.yaml"
        try:
            policy = compose(parse(text, source), directory_resolver(self.search,
                                                                     exclude=str(path)))
        except PolicyError as e:
            raise BadRequest(f"invalid policy:\n{e}", "fix the listed problems") from e
        if policy.name != name:
            raise BadRequest(f"the policy's `name` is {policy.name!r}, not {name!r}",
                             f"set `name: {name}` in the YAML or PUT it to its own name")
        published = self.publish(name, text)   # first: if it cannot be shared, nothing changes
        self.policy_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return {"name": name, "version": policy.version, "rules": len(policy.rules),
                "revision": published if isinstance(published, int) else None}

    def delete(self, name: str) -> None:
        path = self._file(name)
        if not path.exists():
            if any(_named(d, name) for d in self.defaults):
                raise BadRequest(f"policy {name!r} is packaged with sandgate and read-only",
                                 "PUT a policy of the same name to override it")
            raise NotFound(f"no policy named {name!r}")
        self.publish(name, None)
        path.unlink()

    def test(self, name: str, method: str, url: str, headers: Mapping[str, str] | None = None,
             body_size: int = 0,
             mcp: tuple[str | None, Mapping[str, str], str | None] = (None, {}, None)
             ) -> dict[str, Any]:
        """`sandgate policy test` through the API: the same answer, steps and near misses.
        `mcp`: (tool, string arguments, method) of an MCP message in the body."""
        policy = self.acquire(name).policy
        try:
            request = request_from_url(method, url, (headers or {}).items())
            call = mcp_call(mcp[0], mcp[1], mcp[2])
        except ValueError as e:
            raise BadRequest(str(e)) from e
        result = trial(policy, request, body_size, mcp=call)
        decision = result.decision
        return {"decision": str(decision.verdict), "rule": decision.rule,
                "reason": str(decision.reason), "policy": policy.name,
                "version": policy.version, "path": result.path,
                "steps": result.steps, "nearest": result.nearest}

    def status(self) -> dict[str, Any]:
        with self._lock:
            handles = [h.status() for h in self._handles.values()]
        return {"policy_dir": str(self.policy_dir), "active": handles,
                "directory_errors": list(self._directory_errors)}


def _named(directory: Path, name: str) -> Path | None:
    """The policy file in `directory` whose `name` is `name`: NAME.yaml when it says so,
    otherwise the first file that does."""
    files = policy_files(directory)
    likely = [p for p in files if p.stem == name]
    for path in [*likely, *(p for p in files if p.stem != name)]:
        source = read(path)
        if source.spec is not None and source.spec.name == name:
            return path.resolve()
    return None
