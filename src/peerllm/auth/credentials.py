"""This node's signatures on the mesh: its node certificate, delegations, receipts.

Made with two keys the node already has: its issuer key signs the node certificate
(in memory, renewed before it runs out), its libp2p node key signs delegations for the
peers it forwards to and receipts for the peers it serves.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .authority import ANONYMOUS, Principal
from .delegation import CERT_TTL_S, make_delegation, make_node_cert
from .receipts import Receipt, make_receipt

_RENEW_FRACTION: Final = 0.5  # a certificate past half its life is replaced


class NodeCredentials:
    """Signs for the node ``peer_id`` (whose libp2p key is ``node_key``)."""

    def __init__(self, *, node_key: Ed25519PrivateKey, peer_id: str,
                 issuer_key: Ed25519PrivateKey, cert_ttl_s: int = CERT_TTL_S) -> None:
        self.peer_id = peer_id
        self._node_key = node_key
        self._issuer_key = issuer_key
        self._cert_ttl_s = cert_ttl_s
        self._cert: str | None = None
        self._cert_renew_at = 0.0

    def certificate(self, *, now: float) -> str:
        """Our node certificate, signed by our own issuer."""
        if self._cert is None or now >= self._cert_renew_at:
            self._cert = make_node_cert(self._issuer_key, self.peer_id, now=int(now),
                                        ttl_s=self._cert_ttl_s)
            self._cert_renew_at = now + self._cert_ttl_s * _RENEW_FRACTION
        return self._cert

    def delegation(self, principal: Principal | None, *, audience: str, now: float) -> str:
        """A fresh delegation for ``audience`` acting for ``principal`` (None: anonymous)."""
        return make_delegation(
            self._node_key, forwarder=self.peer_id, audience=audience,
            subject=ANONYMOUS if principal is None else principal.subject,
            token=None if principal is None else principal.claims,
            cert=self.certificate(now=now), now=int(now))

    def receipt(self, receipt: Receipt) -> str:
        """``receipt`` (naming us as its server) signed with our node key."""
        if receipt.server != self.peer_id:
            raise ValueError("a receipt of ours must name us as its server")
        return make_receipt(self._node_key, receipt)
