"""Fixtures for the gateway's unit tests: the token servers, in this process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox_net.testnet.tokens import Material, make_material
from tests.token_servers import Servers


@pytest.fixture(scope="session")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("tokens"), "google.example.test", lifetime=60)


@pytest.fixture
def servers(material: Material) -> Iterator[Servers]:
    yield Servers(material)
