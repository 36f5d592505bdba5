"""/v1/secrets and /v1/vault: values go in, never out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from gateway.control.api.deps import Caller, need
from gateway.control.roles import Scope
from gateway.control.secrets import Secrets
from policies.schema import K8S_NAMESPACE


class SecretBody(BaseModel):
    """A value, or a provider and its fields (vault.providers)."""

    model_config = ConfigDict(extra="forbid")
    value: str | None = Field(default=None, min_length=1, max_length=65536, repr=False)
    provider: str | None = Field(default=None, min_length=1, max_length=64)
    fields: dict[str, str] = Field(default_factory=dict, max_length=32, repr=False)

    @model_validator(mode="after")
    def _one(self) -> SecretBody:
        if (self.value is None) == (self.provider is None):
            raise ValueError("give a value, or a provider and its fields")
        if self.value is not None and self.fields:
            raise ValueError("fields go with a provider")
        return self


class SecretNamespaces(BaseModel):
    """The Kubernetes namespaces whose pods may bind a secret; empty: none may."""

    model_config = ConfigDict(extra="forbid")
    namespaces: list[Annotated[str, Field(pattern=K8S_NAMESPACE)]] = Field(max_length=1000)


def router(secrets: Secrets) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["secrets"])

    @api.put("/secrets/{name}")
    async def put_secret(name: str, body: SecretBody, caller: Caller) -> dict[str, Any]:
        need(caller, Scope.SECRETS)
        if body.provider is not None:
            version = await run_in_threadpool(secrets.put_provider, name, body.provider,
                                              body.fields)
        else:
            assert body.value is not None
            version = await run_in_threadpool(secrets.put, name, body.value)
        return {"name": name, "version": version}

    @api.put("/secrets/{name}/kubernetes")
    async def put_secret_namespaces(name: str, body: SecretNamespaces,
                                    caller: Caller) -> dict[str, Any]:
        need(caller, Scope.SECRETS)
        allowed = await run_in_threadpool(secrets.set_namespaces, name, body.namespaces)
        return {"name": name, "kubernetes_namespaces": list(allowed)}

    @api.get("/secrets")
    def list_secrets(caller: Caller) -> list[dict[str, Any]]:
        need(caller, Scope.SECRETS)
        return secrets.list()

    @api.delete("/secrets/{name}", status_code=204)
    def delete_secret(name: str, caller: Caller) -> None:
        need(caller, Scope.SECRETS)
        secrets.delete(name)

    @api.post("/vault/rotate-master")
    async def rotate_master(caller: Caller) -> dict[str, Any]:
        need(caller, Scope.VAULT)
        key_id, count = await run_in_threadpool(secrets.rotate_master_key)
        return {"master_key_id": key_id, "rewrapped": count}

    return api
