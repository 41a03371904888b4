"""TLS to NATS: the CA a server's certificate must chain to, and a client certificate.

AUTAN_NATS_TLS_CA     the CA file (else a tls:// URL is checked with the system's CAs)
AUTAN_NATS_TLS_CERT   a client certificate, for a server that verifies its clients
AUTAN_NATS_TLS_KEY    its private key
"""

from __future__ import annotations

import ssl
from pathlib import Path

import msgspec

__all__ = ["NatsTls"]


class NatsTls(msgspec.Struct, frozen=True, kw_only=True):
    """The files of one process's TLS to NATS."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def files(self) -> list[Path]:
        return [path for path in (self.ca, self.cert, self.key) if path is not None]

    def context(self) -> ssl.SSLContext:
        """A client context: the server's certificate checked (hostname too)."""
        try:
            context = ssl.create_default_context(
                cafile=str(self.ca) if self.ca is not None else None
            )
            if self.cert is not None:
                context.load_cert_chain(
                    str(self.cert), str(self.key) if self.key is not None else None
                )
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cannot use the TLS files for NATS ({exc}): check AUTAN_NATS_TLS_CA, "
                "AUTAN_NATS_TLS_CERT and AUTAN_NATS_TLS_KEY"
            ) from None
        return context
