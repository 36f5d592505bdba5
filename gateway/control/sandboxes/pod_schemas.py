"""The pod API's models (/v1/pods, control socket only): what sandgate-cni sends for a pod,
and what it gets back for its CNI result."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from policies.schema import SecretName
from vault.placeholders import PATTERN

Placeholder = Annotated[str, Field(pattern=f"^{PATTERN.pattern}$")]

CONTAINER_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$"
IFNAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$"           # IFNAMSIZ - 1
# Kubernetes names: a namespace is a DNS label, a pod name a DNS subdomain.
K8S_NAMESPACE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
K8S_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
POD_UID = r"^[A-Za-z0-9-]{1,64}$"


class PodAttach(BaseModel):
    model_config = ConfigDict(extra="forbid")

    container_id: str = Field(pattern=CONTAINER_ID,
                              description="CNI_CONTAINERID: the pod sandbox's container")
    netns: str = Field(pattern=r"^/[^\x00]{0,4095}$", description="CNI_NETNS, a path")
    # what the plugin found at that path: the gateway acts only on the same namespace
    netns_dev: int = Field(ge=0, description="st_dev of CNI_NETNS as the runtime sees it")
    netns_ino: int = Field(ge=1, description="st_ino of CNI_NETNS as the runtime sees it")
    ifname: str = Field(default="eth0", pattern=IFNAME,
                        description="the pod's end of its link (CNI_IFNAME)")
    namespace: str = Field(pattern=K8S_NAMESPACE, description="K8S_POD_NAMESPACE")
    name: str = Field(pattern=K8S_NAME, description="K8S_POD_NAME")
    uid: str | None = Field(default=None, pattern=POD_UID, description="K8S_POD_UID")
    policy: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
                        description="a stored policy's name (annotation sandgate.dev/policy)")
    secrets: dict[SecretName, Placeholder] = Field(
        default_factory=dict,
        description="secret name -> the placeholder the pod holds for it (annotation "
                    "sandgate.dev/secrets)")

    @field_validator("policy")
    @classmethod
    def _stored_name(cls, value: str) -> str:
        # a name ending in .yaml would be read as a file of the gateway's (PolicyStore.path_for)
        if value.endswith((".yaml", ".yml")):
            raise ValueError("a stored policy's name, not a file")
        return value


class PodPublic(BaseModel):
    id: str                     # the sandbox id: audit rows name it
    container_id: str
    pod: str                    # namespace/name
    pod_uid: str | None = None
    policy: str
    ifname: str
    ip: str
    gateway_ip: str             # the pod's default route and DNS server
    prefix: int                 # of the link's network
    created_at: datetime
