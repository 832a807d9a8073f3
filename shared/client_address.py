"""The real client address behind the gateway: rate limits are keyed on it, so it must not be what a client
says it is.

X-Forwarded-For (and X-Real-IP) are believed only when the connection comes from a trusted proxy
(`TRUSTED_PROXIES`: the gateway's addresses; loopback for the local launcher). The client is then the
right-most address in X-Forwarded-For that is not itself a trusted proxy: nginx appends the address it saw, so
whatever a client wrote to the left of it is skipped. From anyone else the headers are ignored and the
connection's own address counts. X-Forwarded-Proto is believed on the same terms.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> tuple[Network, ...]:
    """`TRUSTED_PROXIES`: addresses or CIDR ranges separated by commas or spaces. Raises ValueError on a bad one
    (a typo must stop the service, not silently trust nobody or everybody)."""
    return tuple(ipaddress.ip_network(part, strict=False) for part in value.replace(",", " ").split())


def _in(networks: Iterable[Network], host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def client_address(peer: str, forwarded_for: str | None, real_ip: str | None,
                   trusted: tuple[Network, ...]) -> str:
    """The client's address for a connection from `peer` carrying these headers."""
    if not _in(trusted, peer):
        return peer
    if forwarded_for:
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not _in(trusted, hop):
                return hop if _is_address(hop) else peer
        if hops and _is_address(hops[0]):
            return hops[0]  # every hop is a trusted proxy: the first of them
    if real_ip and _is_address(real_ip.strip()):
        return real_ip.strip()
    return peer


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class TrustedProxies:
    """Rewrite the request's client (and scheme) from the proxy headers, for connections from a trusted proxy."""

    def __init__(self, app: ASGIApp, trusted: tuple[Network, ...]) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("client"):
            peer, port = scope["client"]
            if _in(self.trusted, peer):
                headers = {k: v.decode("latin-1") for k, v in scope.get("headers", [])
                           if k in (b"x-forwarded-for", b"x-real-ip", b"x-forwarded-proto")}
                scope = dict(scope)
                scope["client"] = (client_address(peer, headers.get(b"x-forwarded-for"), headers.get(b"x-real-ip"),
                                                  self.trusted), port)
                proto = headers.get(b"x-forwarded-proto", "").strip().lower()
                if proto in ("http", "https"):
                    scope["scheme"] = proto if scope["type"] == "http" else ("wss" if proto == "https" else "ws")
        await self.app(scope, receive, send)
