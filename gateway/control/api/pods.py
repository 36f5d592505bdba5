"""/v1/pods, on the control socket only: sandgate-cni attaches, checks and detaches the pods
of its node (CNI ADD, CHECK, DEL). Over TCP these routes do not exist: attaching a namespace
by path is the node's business, never a remote caller's."""

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from gateway.control.api.deps import Caller, need
from gateway.control.roles import Scope
from gateway.control.sandboxes.pod_schemas import CONTAINER_ID, PodAttach, PodPublic
from gateway.control.sandboxes.pods import Pods

ContainerId = Path(pattern=CONTAINER_ID)


def router(pods: Pods) -> APIRouter:
    api = APIRouter(prefix="/v1/pods", tags=["pods"])

    @api.post("", status_code=201)
    async def attach_pod(body: PodAttach, caller: Caller) -> PodPublic:
        need(caller, Scope.SANDBOXES)
        return await run_in_threadpool(pods.attach, body, caller.id)

    @api.get("/{container_id}")
    async def check_pod(caller: Caller, container_id: str = ContainerId) -> PodPublic:
        """The attachment, verified: rules, source pin, link and registration in place."""
        need(caller, Scope.SANDBOXES)
        return await run_in_threadpool(pods.check, container_id)

    @api.delete("/{container_id}", status_code=204)
    async def detach_pod(caller: Caller, container_id: str = ContainerId) -> None:
        """Idempotent: a pod the gateway does not know is already detached."""
        need(caller, Scope.SANDBOXES)
        await run_in_threadpool(pods.detach, container_id)

    return api
