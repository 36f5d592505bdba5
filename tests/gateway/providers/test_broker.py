"""The broker: one mint for many askers, cached while fresh, minted again for a new version
of the secret or once stale; a rotated refresh token stored back once and only over the
version it came from; failures audited, recorded in the secret's state and answered from the
cache for a while; no value in any row or state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.db import make_engine
from gateway.providers.broker import Broker, fresh_until
from policies.schema import Narrow
from tests.doubles import wsgi_connector
from tests.token_servers import Servers
from vault import providers
from vault.crypto import MasterKey
from vault.store import Vault


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Vault]:
    vault = Vault(make_engine(f"sqlite:///{tmp_path / 'vault.db'}"), MasterKey.generate())
    yield vault
    vault.engine.dispose()


class Rows:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def __call__(self, row: dict[str, Any]) -> None:
        self.rows.append(row)


def broker(vault: Vault, servers: Servers, rows: Rows) -> Broker:
    return Broker(vault, wsgi_connector(servers.app), rows)


def generation(vault: Vault, name: str) -> str:
    current = vault.current(name, fresh=True)
    assert current is not None
    return current.generation


def test_many_askers_one_mint_then_the_cache(vault: Vault, servers: Servers) -> None:
    providers.store(vault, "API", servers.client_credentials())
    rows = Rows()
    b = broker(vault, servers, rows)

    async def ask() -> list[Any]:
        first = await asyncio.gather(*(b.credential("API", generation(vault, "API"), None, "s1")
                                       for _ in range(20)))
        later = await b.credential("API", generation(vault, "API"), None, "s2")
        return [*first, later]

    answers = asyncio.run(ask())
    assert len(servers.issued("oauth")) == 1
    assert {a.value.reveal() for a in answers} == {servers.issued("oauth")[0]["token"]}
    assert [(r["reason"], r["secrets"], r["sandbox_id"]) for r in rows.rows] == [
        ("credential_refreshed", "API", "s1")]
    row = rows.rows[0]
    assert (row["protocol"], row["host"], row["path"], row["status"]) == (
        "token", "auth.example.test", "/oauth/token", 200)
    info = next(i for i in vault.list() if i.name == "API")
    assert info.provider == "oauth2_client_credentials" and info.refreshed_at is not None
    assert info.expires_at is not None and info.error is None
    b.close()


def test_a_stale_value_is_minted_again(vault: Vault, servers: Servers) -> None:
    providers.store(vault, "API", servers.client_credentials())
    b = broker(vault, servers, Rows())
    one = asyncio.run(b.credential("API", generation(vault, "API"), None, "s"))
    assert one.fresh_until == pytest.approx(time.time() + 60 - 12, abs=2)  # lifetime 60 s
    next(iter(b._entries.values())).fresh_until = time.time() - 1          # time passed
    two = asyncio.run(b.credential("API", generation(vault, "API"), None, "s"))
    assert len(servers.issued("oauth")) == 2 and two.value != one.value
    b.close()


def test_a_new_version_of_the_secret_is_used_at_once(vault: Vault, servers: Servers) -> None:
    providers.store(vault, "API", servers.client_credentials())
    b = broker(vault, servers, Rows())
    asyncio.run(b.credential("API", generation(vault, "API"), None, "s"))
    providers.store(vault, "API", servers.client_credentials(scopes="write"))
    asyncio.run(b.credential("API", generation(vault, "API"), None, "s"))
    assert len(servers.issued("oauth")) == 2
    b.close()


def test_narrowings_are_minted_apart(vault: Vault, servers: Servers) -> None:
    providers.store(vault, "GH", servers.github())
    b = broker(vault, servers, Rows())
    hello = Narrow(repositories=("hello",))
    for narrow in (hello, None, hello):
        asyncio.run(b.credential("GH", generation(vault, "GH"), narrow, "s"))
    assert [e["repositories"] for e in servers.issued("github")] == [["hello"], None]
    b.close()


def test_a_rotated_refresh_token_is_stored_back_once(vault: Vault, servers: Servers) -> None:
    first = servers.consent()
    providers.store(vault, "RT", servers.refresh_token(first))
    b = broker(vault, servers, Rows())
    before = generation(vault, "RT")
    answer = asyncio.run(b.credential("RT", before, None, "s"))
    assert answer.value is not None
    current, sealed = vault.reveal_provider("RT", fresh=True)
    assert current.version == 2
    stored = providers.from_text(sealed.reveal())
    assert stored.get("refresh_token") == servers.issued("oauth")[-1]["refresh_token"] != first
    # a worker that still knows the old version gets the same value, not a new mint
    assert asyncio.run(b.credential("RT", before, None, "s")).value == answer.value
    assert len(servers.issued("oauth")) == 2      # consent, one refresh
    b.close()


def test_a_configuration_changed_meanwhile_is_not_overwritten(vault: Vault,
                                                              servers: Servers) -> None:
    providers.store(vault, "RT", servers.refresh_token(servers.consent()))
    b = broker(vault, servers, Rows())
    mine = servers.consent()
    real_put = vault.put

    def admin_first(name: str, value: str, **kwargs: Any) -> int:
        admin = servers.refresh_token(mine)                         # the admin, meanwhile
        real_put(name, admin.to_text(), provider=admin.kind)
        return real_put(name, value, **kwargs)

    vault.put = admin_first  # type: ignore[method-assign]
    asyncio.run(b.credential("RT", generation(vault, "RT"), None, "s"))
    vault.put = real_put     # type: ignore[method-assign]
    _current, sealed = vault.reveal_provider("RT", fresh=True)
    assert providers.from_text(sealed.reveal()).get("refresh_token") == mine
    b.close()


def test_a_revoked_refresh_token_is_an_audited_error(vault: Vault, servers: Servers) -> None:
    config = servers.refresh_token(servers.consent())
    providers.store(vault, "RT", config)
    servers.revoke()
    rows = Rows()
    b = broker(vault, servers, rows)
    answer = asyncio.run(b.credential("RT", generation(vault, "RT"), None, "s"))
    assert answer.value is None and answer.error is not None
    assert "invalid_grant" in answer.error and answer.fresh_until > time.time()
    assert [(r["decision"], r["reason"]) for r in rows.rows] == [
        ("error", "credential_unavailable")]
    info = next(i for i in vault.list() if i.name == "RT")
    assert info.error is not None and "invalid_grant" in info.error
    # answered from the cache for a while: no second request to the endpoint
    asyncio.run(b.credential("RT", generation(vault, "RT"), None, "s"))
    assert len(rows.rows) == 1
    text = repr(rows.rows) + repr(vault.list())
    assert config.get("refresh_token") not in text and servers.material.rt_secret not in text
    b.close()


def test_a_value_still_valid_is_kept_when_refreshing_fails(vault: Vault,
                                                           servers: Servers) -> None:
    providers.store(vault, "API", servers.client_credentials())
    b = broker(vault, servers, Rows())
    good = asyncio.run(b.credential("API", generation(vault, "API"), None, "s"))
    entry = next(iter(b._entries.values()))
    entry.fresh_until = time.time() - 1      # due for a refresh, not expired
    broken = servers.client_credentials().with_field("client_secret", "nope-nope")
    vault.put("API", broken.to_text(), provider=broken.kind,
              expect=generation(vault, "API"))
    again = asyncio.run(b.credential("API", generation(vault, "API"), None, "s"))
    assert again.value == good.value and again.error is None
    b.close()


def test_an_mtls_secret_has_no_value(vault: Vault, servers: Servers, tmp_path: Path) -> None:
    from sandbox_net.testnet.mtls import make_client_pki

    pki = make_client_pki(tmp_path / "pki")
    providers.store(vault, "CERT", providers.parse("mtls_client_cert", {
        "certificate": pki.chain.read_text(), "key": pki.key.read_text()}))
    b = broker(vault, servers, Rows())
    answer = asyncio.run(b.credential("CERT", generation(vault, "CERT"), None, "s"))
    assert answer.value is None and "as: mtls" in (answer.error or "")
    b.close()


def test_freshness_ends_before_expiry() -> None:
    assert fresh_until(1000.0, 0.0) == 940.0          # a minute early at most
    assert fresh_until(10.0, 0.0) == 8.0              # a fifth of a short lifetime
    assert fresh_until(None, 0.0) == 300.0


def test_a_refresh_token_another_gateway_rotated_is_taken_up(vault: Vault,
                                                             servers: Servers) -> None:
    """Two gateways on one database: the other one used and rotated the refresh token this
    broker read; refused, this broker reads the one stored and stores its own rotation."""
    providers.store(vault, "RT", servers.refresh_token(servers.consent()))
    b = broker(vault, servers, Rows())
    stale = generation(vault, "RT")
    real_reveal = vault.reveal_provider
    calls = 0

    def other_gateway_rotates_first(name: str, *, fresh: bool = False) -> Any:
        nonlocal calls
        calls += 1
        seen = real_reveal(name, fresh=fresh)
        if calls == 1:   # after this broker read it, the other gateway spends it
            from gateway.providers import flows
            from tests.doubles import wsgi_connector as connector
            config = providers.from_text(seen[1].reveal())
            minted = flows.mint(config, None, connector(servers.app)([], []))
            assert minted.rotated is not None
            vault.put(name, minted.rotated.to_text(), provider=config.kind)
        return seen

    vault.reveal_provider = other_gateway_rotates_first  # type: ignore[method-assign]
    answer = asyncio.run(b.credential("RT", stale, None, "s"))
    assert answer.value is not None and answer.error is None
    current, sealed = real_reveal("RT", fresh=True)
    assert current.version == 3          # the other gateway's rotation, then this one's
    assert providers.from_text(sealed.reveal()).get("refresh_token") == \
        servers.issued("oauth")[-1]["refresh_token"]
    b.close()
