"""TLS to an external NATS: the server's certificate checked against AUTAN_NATS_TLS_CA, a
client certificate shown where the server asks for one (here it does), and a process that
cannot agree on TLS told what to set. Isolated workers get copies of the files."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker import BrokerUnavailable
from runtime.client import Session
from runtime.control import LocalProvider, NatsServer, free_port, isolation_unavailable
from runtime.core import Link, Settings, WorkerDirectory
from runtime.ops import deploy_target, make_buckets
from tests.keys import DEPLOY_KEY, TRUSTED_KEYS
from tests.stack import serving


class Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as files."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
        self._ca = (
            self._builder(ca_name, ca_name, self._ca_key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca = self._write("ca.pem", self._ca)
        self.server_cert, self.server_key = self._leaf("server", server=True)
        self.client_cert, self.client_key = self._leaf("client", server=False)

    def _builder(
        self, subject: x509.Name, issuer: x509.Name, key: object
    ) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())  # type: ignore[attr-defined]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def _leaf(self, name: str, *, server: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), self._ca.subject, key
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        cert = builder.sign(self._ca_key, hashes.SHA256())
        key_path = self.folder / f"{name}.key"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return self._write(f"{name}.pem", cert), key_path

    def _write(self, name: str, cert: x509.Certificate) -> Path:
        path = self.folder / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"), "autan")


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """nats-server on TLS alone, verifying its clients' certificates."""
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
           "ca_file": str(pki.ca), "verify": True, "timeout": 2}  # fmt: skip
    server = NatsServer(tmp_path_factory.mktemp("tls-nats"), port=free_port(), tls=tls)
    server.start()
    yield server
    server.stop()


def _settings(server: NatsServer, data_dir: Path, **tls: Path | None) -> Settings:
    return Settings(
        nats_url=server.url,
        data_dir=data_dir,
        storage_url=f"file://{data_dir / 'objects'}",
        deploy_key=DEPLOY_KEY,
        trusted_keys=TRUSTED_KEYS,
        connect_timeout_s=2.0,
        **tls,  # type: ignore[arg-type]
    )


def _trusted(server: NatsServer, pki: Pki, data_dir: Path) -> Settings:
    return _settings(server, data_dir, nats_tls_ca=pki.ca, nats_tls_cert=pki.client_cert,
                     nats_tls_key=pki.client_key)  # fmt: skip


async def test_a_client_with_the_ca_and_its_certificate_connects(
    tls_server: NatsServer, pki: Pki, tmp_path: Path
) -> None:
    assert tls_server.url.startswith("tls://")
    async with await Link.open(_trusted(tls_server, pki, tmp_path)) as link:
        assert await link.registry.all() is not None


async def test_a_server_certificate_from_another_ca_is_refused_with_what_to_set(
    tls_server: NatsServer, pki: Pki, tmp_path: Path
) -> None:
    other = Pki(tmp_path / "other", "other")
    settings = _settings(tls_server, tmp_path, nats_tls_ca=other.ca,
                         nats_tls_cert=pki.client_cert, nats_tls_key=pki.client_key)  # fmt: skip
    with pytest.raises(BrokerUnavailable, match="AUTAN_NATS_TLS_CA"):
        await Link.open(settings)


async def test_no_client_certificate_is_refused(
    tls_server: NatsServer, pki: Pki, tmp_path: Path
) -> None:
    settings = _settings(tls_server, tmp_path, nats_tls_ca=pki.ca)
    with pytest.raises(BrokerUnavailable, match="AUTAN_NATS_TLS_CERT"):
        await Link.open(settings)


async def test_a_plain_url_to_a_tls_server_is_told_about_tls(
    tls_server: NatsServer, tmp_path: Path
) -> None:
    plain = msgspec.structs.replace(
        _settings(tls_server, tmp_path), nats_url=f"nats://127.0.0.1:{tls_server.port}"
    )
    with pytest.raises(BrokerUnavailable, match="TLS"):
        await Link.open(plain)


@pytest.fixture
async def trusted_link(tls_server: NatsServer, pki: Pki, tmp_path: Path) -> AsyncIterator[Link]:
    async with await Link.open(_trusted(tls_server, pki, tmp_path)) as link:
        await make_buckets(link)
        await deploy_target(link, "tests.apps.sample")
        yield link


@pytest.mark.timeout(120)
async def test_workers_reach_nats_over_tls_from_their_sandbox(trusted_link: Link) -> None:
    """The worker's copies of the CA, certificate and key are its own; its connection
    goes through the gate, then TLS as any other."""
    settings = trusted_link.settings
    isolate = isolation_unavailable() is None
    provider = LocalProvider(settings, isolate=isolate, stop_grace_s=10)
    async with serving(provider), await Session.open(settings) as session:
        worker = await provider.start(await trusted_link.registry.get("tests", "echo"))
        directory = await WorkerDirectory.open(trusted_link.broker)
        await directory.wait_until(
            lambda ws: any(w.worker_id == worker.worker_id and w.state == "ready" for w in ws),
            60,
        )
        assert await session.call("tests", "echo", ("over tls",), {}) == "over tls"
        assert provider.workers()[0].isolated == isolate
