"""
Certificates for the tests, and TLS clients and origins on 127.0.0.1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import trustme
from attrs import frozen
from cryptography import x509
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IHandshakeListener,
    IListeningPort,
    IOpenSSLClientConnectionCreator,
)
from twisted.internet.protocol import Factory
from twisted.internet.ssl import PrivateCertificate
from twisted.python.failure import Failure
from twisted.web.server import Site
from zope.interface import implementer

from tests.h2client import H2Client
from tests.loopback import EchoPage, RawClient


def write_leaf(directory: str, name: str, leaf: trustme.LeafCert) -> str:
    """
    Write C{leaf}'s key, certificate and chain into one PEM file; return its path.
    """
    path = os.path.join(directory, name)
    leaf.private_key_and_cert_chain_pem.write_to_path(path)
    return path


def write_ca(directory: str, name: str, ca: trustme.CA) -> str:
    """
    Write C{ca}'s certificate into a PEM file; return its path.
    """
    path = os.path.join(directory, name)
    ca.cert_pem.write_to_path(path)
    return path


@frozen
class ClientHello:
    """
    What a test client asks for in its handshake.
    """

    ca: trustme.CA | None = None
    server_name: bytes | None = None
    alpn: Sequence[bytes] = ()
    min_version: int | None = None
    max_version: int | None = None
    certificate: trustme.LeafCert | None = None
    # OpenSSL refuses TLS 1.0 and 1.1 at its default security level, even as a client.
    legacy: bool = False
    # The key exchange groups offered, as OpenSSL names them, or None for its defaults.
    groups: bytes | None = None


@implementer(IOpenSSLClientConnectionCreator)
class _Creator:
    def __init__(self, hello: ClientHello) -> None:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        if hello.legacy:
            context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        if hello.min_version is not None:
            context.set_min_proto_version(hello.min_version)
        if hello.max_version is not None:
            context.set_max_proto_version(hello.max_version)
        if hello.alpn:
            context.set_alpn_protos(list(hello.alpn))
        if hello.groups is not None:
            from OpenSSL._util import lib

            lib.SSL_CTX_set1_curves_list(context._context, hello.groups)
        if hello.certificate is not None:
            hello.certificate.configure_cert(context)
        if hello.ca is not None:
            hello.ca.configure_trust(context)
            context.set_verify(SSL.VERIFY_PEER)
        self._context = context
        self._hello = hello

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:  # noqa: N803
        connection = SSL.Connection(self._context, None)
        if self._hello.server_name is not None:
            connection.set_tlsext_host_name(self._hello.server_name)
        connection.set_connect_state()
        return connection


@implementer(IHandshakeListener)
class TLSClient(RawClient):
    """
    A L{RawClient} over TLS: C{handshake} fires with it once the handshake
    is done, or fails with the reason it failed.

    @ivar certificate: the certificate the server presented.
    @ivar protocol: the protocol ALPN chose, or L{None}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.handshake: Deferred[TLSClient] = Deferred()
        self.certificate: x509.Certificate | None = None
        self.protocol: bytes | None = None

    def handshakeCompleted(self) -> None:
        peer = self.transport.getPeerCertificate()
        self.certificate = peer.to_cryptography() if peer is not None else None
        self.protocol = self.transport.negotiatedProtocol
        self.handshake.callback(self)

    def connectionLost(self, reason: Failure) -> None:
        if not self.handshake.called:
            self.handshake.errback(reason)
        super().connectionLost(reason)


def connect_tls(port: int, hello: ClientHello) -> Deferred[TLSClient]:
    """
    Connect a L{TLSClient} to C{port} on 127.0.0.1 and wait for its handshake.
    """
    endpoint = wrapClientTLS(_Creator(hello), TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    connected = endpoint.connect(Factory.forProtocol(TLSClient))
    return connected.addCallback(lambda client: client.handshake)


def names(certificate: x509.Certificate | None) -> list[str]:
    """
    The DNS names of a certificate's subjectAltName.
    """
    assert certificate is not None
    alt = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return alt.value.get_values_for_type(x509.DNSName)


def start_tls_origin(test_case: object, leaf: trustme.LeafCert) -> IListeningPort:
    """
    Start an HTTPS L{EchoPage} origin presenting C{leaf} on a free loopback port.
    """
    certificate = PrivateCertificate.loadPEM(leaf.private_key_and_cert_chain_pem.bytes())
    site = Site(EchoPage())
    site.noisy = False
    port = reactor.listenSSL(0, site, certificate.options(), interface="127.0.0.1")
    test_case.addCleanup(port.stopListening)  # type: ignore[attr-defined]
    return port


def connect_h2_tls(port: int, hello: ClientHello) -> Deferred[H2Client]:
    """
    Connect an L{H2Client} over TLS to C{port} on 127.0.0.1, offering what
    C{hello} says by ALPN.
    """
    endpoint = wrapClientTLS(_Creator(hello), TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    factory = Factory.forProtocol(H2Client)
    factory.noisy = False
    return endpoint.connect(factory)
