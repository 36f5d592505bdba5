"""What a sandbox's root holds: its image (read-only), who runs in it, its environment, and
the only files the gateway adds (resolv.conf, hosts, the CA bundle). Nothing of the host's
own filesystem is shown to a sandbox."""

from __future__ import annotations

from pathlib import Path

from gateway.dataplane.ca import SYSTEM_BUNDLE
from gateway.errors import BadRequest
from sandbox_net.errors import ImageError, UnknownImage
from sandbox_net.images import rootfs, users
from sandbox_net.images.base import BASE, BASE_HINT
from sandbox_net.images.store import LIST_HINT, Image, ImageStore
from sandbox_net.images.users import RunAs
from sandbox_net.runtime.base import WORKSPACE, FileMount, RootImage

CA_ENV = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")
# Where distributions keep their trust bundle (Debian, Ubuntu and Alpine; Fedora and RHEL;
# openSUSE; Alpine's and LibreSSL's other name): the gateway's bundle is shown at the first
# always (the variables above name it) and at each other the image has, so a client of any
# image trusts the gateway whether or not it reads the variables. (Each bind mount costs
# gVisor's start-up time: not at paths the image does not use.)
CA_PATHS = (str(SYSTEM_BUNDLE), "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/ca-bundle.pem",
            "/etc/ssl/cert.pem")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find(images: ImageStore, name: str) -> Image:
    try:
        return images.get(name)
    except UnknownImage:
        hint = BASE_HINT if name == BASE else LIST_HINT
        raise BadRequest(f"unknown image {name!r}", hint) from None


def run_as(image: Image, requested: str | None) -> RunAs:
    """The user asked for; else the image's own user unless that is root; else uid 1000.
    Root only when asked for by name or number."""
    try:
        if requested is not None:
            return users.resolve(image.rootfs, requested)
        if image.meta.user:
            own = users.resolve(image.rootfs, image.meta.user)
            if own.uid != 0:
                return own
    except ImageError as e:
        raise BadRequest(f"image {image.name!r}: {e}") from None
    return users.DEFAULT


def root(image: Image) -> RootImage:
    return RootImage(image.id, image.rootfs, image.disk)


def cwd(image: Image) -> str:
    return image.meta.workdir or WORKSPACE


def env(image: Image) -> dict[str, str]:
    """The image's Env over the defaults; the CA variables always name the gateway's bundle."""
    return {"PATH": DEFAULT_PATH, "HOME": "/tmp", **image.meta.env,
            **dict.fromkeys(CA_ENV, str(SYSTEM_BUNDLE))}


def files(image: Image, workdir: Path, nameserver: str,
          ca_bundle: Path) -> tuple[FileMount, ...]:
    resolv = workdir / "resolv.conf"
    resolv.write_text(f"nameserver {nameserver}\noptions attempts:2 timeout:2\n")
    hosts = workdir / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost\n")
    bundles = [CA_PATHS[0], *(p for p in CA_PATHS[1:] if rootfs.may_exist(image.rootfs, p))]
    return (FileMount(resolv, "/etc/resolv.conf"), FileMount(hosts, "/etc/hosts"),
            *(FileMount(ca_bundle, path) for path in bundles))
