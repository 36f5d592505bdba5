"""Run the self-test and report one line per check."""

from __future__ import annotations

import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

from gateway.client import Sandbox
from gateway.selftest.checks import FIRST_ROUND, SECOND_ROUND, Check, Result, dummy_secret
from gateway.selftest.plan import Plan, make_plan
from gateway.selftest.seat import Seat
from gateway.selftest.world import World, world, zone_for
from policies.matcher import CompiledPolicy
from sandbox_net.testnet import METADATA_IP

Echo = Callable[[str], None]


def selftest(policy: CompiledPolicy, path: Path, echo: Echo) -> bool:
    """True when every check passed. The work directory is kept (and named) on failure."""
    plan = make_plan(policy)
    _describe(policy, path, plan, echo)
    workdir = Path(tempfile.mkdtemp(prefix="sandgate-selftest-"))
    results: list[Result] = []
    with world(plan, workdir) as w:
        echo(f"world: namespaces {w.host_netns} (gateway) and {w.topology.netns} (internet), "
             f"work directory {workdir}")
        secrets = sorted({name for probe in plan.probes for name in probe.secrets})
        for name in secrets:
            w.client.put_secret(name, dummy_secret(name))
        with w.client.create(policy=str(path), secrets=secrets) as sandbox:
            seat = Seat(w.topology, w.client, sandbox)
            results += _round(FIRST_ROUND, seat, plan, echo)
            _repoint_at_metadata(w, plan)
            results += _round(SECOND_ROUND, seat, plan, echo)
            _check_alive(sandbox, results, echo)
    failed = sum(not r.passed for r in results)
    echo(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        echo(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return failed == 0


def _describe(policy: CompiledPolicy, path: Path, plan: Plan, echo: Echo) -> None:
    echo(f"sandgate selftest: policy {policy.name} ({path}), {len(policy.rules)} rules, "
         f"{len(plan.probes)} of them probed")
    if policy.monitor:
        echo("note: the policy is in monitor mode: it refuses nothing it could refuse, it "
             "only audits would_deny; the checks of what is refused will fail")
    for why in plan.skipped:
        echo(f"SKIP  {why}")


def _round(checks: Iterable[Check], seat: Seat, plan: Plan, echo: Echo) -> list[Result]:
    results = []
    for check in checks:
        try:
            found = list(check(seat, plan))
        except Exception as e:  # one broken check must not hide the others
            detail = "".join(traceback.format_exception_only(e)).strip()
            found = [Result(check.__name__.replace("_", " "), False, f"error: {detail}")]
        for result in found:
            echo(f"{'PASS' if result.passed else 'FAIL'}  {result.check:<16} {result.detail}")
        results += found
    return results


def _repoint_at_metadata(w: World, plan: Plan) -> None:
    """The DNS of every probed name now answers the metadata address (a hijacked or
    malicious record): the gateway must refuse to dial it."""
    w.topology.rezone(zone_for(plan, {p.host: METADATA_IP for p in plan.probes}))


def _check_alive(sandbox: Sandbox, results: list[Result], echo: Echo) -> None:
    state = sandbox.refresh().get("state")
    result = Result("sandbox", state == "running",
                    f"the sandbox is {state} after the attempts (not quarantined or lost)")
    echo(f"{'PASS' if result.passed else 'FAIL'}  {result.check:<16} {result.detail}")
    results.append(result)
