"""The errors sandbox_net raises. Library errors (NetlinkError, OSError, nft failures) are
turned into these at the module edge, with a message a person can act on."""


class NetError(Exception):
    """Network plumbing failed (namespace, link, address, firewall)."""


class FirewallError(NetError):
    """The nftables table is missing, could not be applied, or does not match what we rendered."""


class RuntimeFailure(Exception):
    """A sandbox runtime could not start, exec or stop."""


class ImageError(Exception):
    """An image could not be built, imported, read or removed."""


class UnknownImage(ImageError):
    """No image has the name asked for."""


class ImageInUse(ImageError):
    """A running sandbox uses the image that was to be removed."""
