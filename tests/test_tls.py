"""
Tests for L{txproxy.tls}: certificate loading and SNI lookup as pure units, then
real handshakes on loopback against listeners built by L{makeService}.
"""

from __future__ import annotations

import hashlib
import json
import os

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.ssl import ContextFactory
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site

from tests.loopback import EchoPage, connect_raw, split_response, start_origin
from tests.tlsclient import (
    ClientHello,
    TLSClient,
    connect_tls,
    names,
    start_tls_origin,
    write_ca,
    write_leaf,
)
from txproxy import config
from txproxy.service import ProxyService, makeService
from txproxy.tls import CertificateError, NameTable, load_key_pair

GET = b"GET /a?b=1 HTTP/1.1\r\nHost: a.example.com\r\n\r\n"


class NameTableTests(SynchronousTestCase):
    """
    L{NameTable} finds the certificate for a server name.
    """

    def setUp(self) -> None:
        self.table = NameTable(
            [["a.example.com"], ["*.example.com", "example.net"], ["a.example.com", "*.b.org"]]
        )

    def test_exact_before_wildcard(self) -> None:
        """
        An exact name wins over a wildcard that also covers it, and the
        first certificate naming it wins.
        """
        self.assertEqual(self.table.lookup("a.example.com"), 0)
        self.assertEqual(self.table.lookup("example.net"), 1)

    def test_wildcard_one_label(self) -> None:
        """
        A wildcard stands for exactly one label.
        """
        self.assertEqual(self.table.lookup("x.example.com"), 1)
        self.assertEqual(self.table.lookup("c.b.org"), 2)
        self.assertIsNone(self.table.lookup("x.y.example.com"))
        self.assertIsNone(self.table.lookup("example.com"))

    def test_case_and_trailing_dot(self) -> None:
        """
        Names compare case-insensitively, a trailing dot ignored.
        """
        self.assertEqual(self.table.lookup("A.Example.COM."), 0)

    def test_unknown(self) -> None:
        """
        A name no certificate is valid for finds nothing.
        """
        self.assertIsNone(self.table.lookup("other.org"))
        self.assertIsNone(self.table.lookup("localhost"))


class LoadKeyPairTests(SynchronousTestCase):
    """
    L{load_key_pair} reads PEM files and refuses unusable ones with the file named.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.ca = trustme.CA()
        self.leaf = self.ca.issue_cert("a.example.com", "*.example.net", "127.0.0.1")

    def test_one_file(self) -> None:
        """
        A file with key, certificate and chain gives the names of the
        certificate's subjectAltName, IP addresses included.
        """
        pair = load_key_pair(write_leaf(self.directory, "site.pem", self.leaf))
        self.assertEqual(pair.names, ("a.example.com", "*.example.net", "127.0.0.1"))

    def test_separate_files(self) -> None:
        """
        A L{config.Certificate} names certificate, key and chain files apart.
        """
        cert = os.path.join(self.directory, "cert.pem")
        key = os.path.join(self.directory, "key.pem")
        chain = os.path.join(self.directory, "chain.pem")
        self.leaf.cert_chain_pems[0].write_to_path(cert)
        self.leaf.private_key_pem.write_to_path(key)
        self.ca.cert_pem.write_to_path(chain)
        pair = load_key_pair(config.Certificate(cert=cert, key=key, chain=chain))
        self.assertEqual(pair.names[0], "a.example.com")
        self.assertEqual(len(pair.chain), 1)

    def test_key_mismatch(self) -> None:
        """
        A key that is not the certificate's is refused, naming the key's file.
        """
        cert = os.path.join(self.directory, "cert.pem")
        key = os.path.join(self.directory, "other-key.pem")
        self.leaf.cert_chain_pems[0].write_to_path(cert)
        self.ca.issue_cert("other.example.com").private_key_pem.write_to_path(key)
        error = self.assertRaises(
            CertificateError, load_key_pair, config.Certificate(cert=cert, key=key)
        )
        self.assertEqual(error.path, key)
        self.assertIn("does not match", error.reason)

    def test_missing_and_garbage(self) -> None:
        """
        A missing file, or one without a certificate or key, is refused with
        its path and why.
        """
        missing = os.path.join(self.directory, "missing.pem")
        self.assertEqual(self.assertRaises(CertificateError, load_key_pair, missing).path, missing)
        garbage = os.path.join(self.directory, "garbage.pem")
        with open(garbage, "wb") as f:
            f.write(b"not a certificate\n")
        error = self.assertRaises(CertificateError, load_key_pair, garbage)
        self.assertIn("no PEM certificate", error.reason)
        cert_only = os.path.join(self.directory, "cert-only.pem")
        self.leaf.cert_chain_pems[0].write_to_path(cert_only)
        error = self.assertRaises(CertificateError, load_key_pair, cert_only)
        self.assertIn("no usable private key", error.reason)


class TLSListenerTests(TestCase):
    """
    Listeners terminating TLS, in front of loopback origins, reached by real
    TLS clients.
    """

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.ca = trustme.CA()
        self.site_a = write_leaf(self.directory, "a.pem", self.ca.issue_cert("a.example.com"))
        self.site_net = write_leaf(
            self.directory, "net.pem", self.ca.issue_cert("*.example.net", "example.net")
        )
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def start(self, *listeners: config.HTTPListener | config.TCPListener) -> ProxyService:
        service = makeService(config.Proxy(listeners=list(listeners)), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def https(
        self,
        tls: config.TLS | None = None,
        pool: config.Pool | None = None,
        **listener: object,
    ) -> int:
        """
        Start an HTTPS listener (certificates for a.example.com, then
        *.example.net) over one origin; return its port.
        """
        if pool is None:
            pool = config.Pool(
                "web", servers=[config.Server(f"127.0.0.1:{start_origin(self).getHost().port}")]
            )
        tls = tls or config.TLS(certificates=[self.site_a, self.site_net])
        self.service = self.start(
            config.HTTPListener(
                "tcp:0:interface=127.0.0.1", routes=[config.Route(pool)], tls=tls, **listener
            )
        )
        port = self.service.listeners[0].port
        assert port is not None
        return port.getHost().port

    @inlineCallbacks
    def request(self, client: TLSClient, request: bytes = GET) -> Deferred[dict[str, object]]:
        """
        Send one request on C{client}; return the status, headers and the
        JSON the origin answered with.
        """
        before = len(client.received)
        client.transport.write(request)
        yield client.wait_for(b"}", client.received.count(b"}") + 1)
        status, headers, body = split_response(client.received[before:])
        return {"status": status, "headers": headers, "echo": json.loads(body)}

    def logged(self) -> str:
        return "\n".join(formatEvent(event) for event in self.events)

    @inlineCallbacks
    def test_sni_choice(self) -> Deferred[None]:
        """
        The certificate follows the name sent by SNI: an exact name, a
        wildcard, and the first certificate for no name or an unknown one.
        """
        port = self.https()
        for server_name, expected in [
            (b"a.example.com", ["a.example.com"]),
            (b"www.example.net", ["*.example.net", "example.net"]),
            (b"example.net", ["*.example.net", "example.net"]),
            (None, ["a.example.com"]),
            (b"unknown.org", ["a.example.com"]),
        ]:
            client = yield connect_tls(port, ClientHello(server_name=server_name))
            self.assertEqual(names(client.certificate), expected, server_name)
            client.transport.loseConnection()

    @inlineCallbacks
    def test_request_forwarded(self) -> Deferred[None]:
        """
        A verified client's request reaches the origin with
        C{X-Forwarded-Proto: https}, and the response comes back over TLS.
        """
        port = self.https()
        client = yield connect_tls(port, ClientHello(ca=self.ca, server_name=b"a.example.com"))
        answer = yield self.request(client)
        self.assertEqual(answer["status"], 200)
        echo = answer["echo"]
        self.assertEqual(echo["uri"], "/a?b=1")
        self.assertIn(["X-Forwarded-Proto", "https"], echo["headers"])
        client.transport.loseConnection()

    @inlineCallbacks
    def test_old_versions_refused(self) -> Deferred[None]:
        """
        TLS 1.0 and 1.1 are refused, though the same client gets through to
        a server that allows them.
        """
        port = self.https()
        for version in (SSL.TLS1_VERSION, SSL.TLS1_1_VERSION):
            hello = ClientHello(max_version=version, legacy=True)
            yield self.assertFailure(connect_tls(port, hello), SSL.Error)
        legacy = _LegacyServer(self.site_a)
        control = reactor.listenSSL(0, Site(EchoPage()), legacy, interface="127.0.0.1")
        self.addCleanup(control.stopListening)
        client = yield connect_tls(
            control.getHost().port, ClientHello(max_version=SSL.TLS1_1_VERSION, legacy=True)
        )
        self.assertIsNotNone(client.certificate)
        client.transport.loseConnection()

    @inlineCallbacks
    def test_minimum_version(self) -> Deferred[None]:
        """
        C{min_version="TLSv1.3"} refuses TLS 1.2.
        """
        port = self.https(config.TLS(certificates=[self.site_a], min_version="TLSv1.3"))
        hello = ClientHello(max_version=SSL.TLS1_2_VERSION)
        yield self.assertFailure(connect_tls(port, hello), SSL.Error)
        client = yield connect_tls(port, ClientHello())
        self.assertEqual(client.transport.getHandle().get_protocol_version_name(), "TLSv1.3")
        client.transport.loseConnection()

    @inlineCallbacks
    def test_groups(self) -> Deferred[None]:
        """
        Key exchange is by X25519 or P-256 only: a client offering only
        P-384 is refused, one offering P-256 gets through.
        """
        port = self.https()
        yield self.assertFailure(connect_tls(port, ClientHello(groups=b"P-384")), SSL.Error)
        client = yield connect_tls(port, ClientHello(groups=b"P-256"))
        self.assertEqual(client.transport.getHandle().get_protocol_version_name(), "TLSv1.3")
        client.transport.loseConnection()

    @inlineCallbacks
    def test_alpn(self) -> Deferred[None]:
        """
        ALPN chooses h2 when the client offers it, else http/1.1; with
        C{http2=False}, only http/1.1 is offered.
        """
        port = self.https()
        client = yield connect_tls(port, ClientHello(alpn=[b"h2", b"http/1.1"]))
        self.assertEqual(client.protocol, b"h2")
        client.transport.loseConnection()
        client = yield connect_tls(port, ClientHello(alpn=[b"http/1.1"]))
        self.assertEqual(client.protocol, b"http/1.1")
        answer = yield self.request(client)
        self.assertEqual(answer["status"], 200)
        client.transport.loseConnection()
        port = self.https(http2=False)
        client = yield connect_tls(port, ClientHello(alpn=[b"h2", b"http/1.1"]))
        self.assertEqual(client.protocol, b"http/1.1")
        client.transport.loseConnection()

    @inlineCallbacks
    def test_hsts(self) -> Deferred[None]:
        """
        C{hsts=} adds C{Strict-Transport-Security} to forwarded responses.
        """
        port = self.https(config.TLS(certificates=[self.site_a], hsts=31536000))
        client = yield connect_tls(port, ClientHello())
        answer = yield self.request(client)
        self.assertEqual(answer["headers"][b"strict-transport-security"], [b"max-age=31536000"])
        client.transport.loseConnection()

    def client_tls(self, verify_client: str) -> config.TLS:
        return config.TLS(
            certificates=[self.site_a],
            client_ca=write_ca(self.directory, "clients.pem", self.clients),
            verify_client=verify_client,
        )

    @inlineCallbacks
    def test_client_certificate_required(self) -> Deferred[None]:
        """
        With C{verify_client="required"}, a client with a certificate from
        the client authority gets through and the origin learns its subject
        and fingerprint, never the values the client sent; a client without
        one, or with one from another authority, is refused before its
        request reaches the origin.
        """
        self.clients = trustme.CA()
        port = self.https(self.client_tls("required"))
        person = self.clients.issue_cert("alice@example.com", common_name="alice")
        client = yield connect_tls(port, ClientHello(certificate=person))
        answer = yield self.request(
            client,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Client-Cert-Subject: CN=mallory\r\n\r\n",
        )
        headers = answer["echo"]["headers"]
        subjects = [value for name, value in headers if name == "X-Client-Cert-Subject"]
        self.assertEqual(len(subjects), 1)
        self.assertTrue(subjects[0].startswith("CN=alice,"), subjects)
        der = x509.load_pem_x509_certificate(person.cert_chain_pems[0].bytes()).public_bytes(
            serialization.Encoding.DER
        )
        self.assertIn(["X-Client-Cert-Fingerprint", hashlib.sha256(der).hexdigest()], headers)
        client.transport.loseConnection()

        for hello in (ClientHello(), ClientHello(certificate=self.ca.issue_cert("bob"))):
            try:
                client = yield connect_tls(port, hello)
            except SSL.Error:
                continue
            # TLS 1.3: the client's handshake ends before the server has
            # checked its certificate; the refusal comes as the connection ends.
            client.transport.write(GET)
            received = yield client.closed
            self.assertEqual(received, b"")

    @inlineCallbacks
    def test_client_certificate_optional(self) -> Deferred[None]:
        """
        With C{verify_client="optional"}, a client without a certificate gets
        through, and what it sends as client certificate fields is removed.
        """
        self.clients = trustme.CA()
        port = self.https(self.client_tls("optional"))
        client = yield connect_tls(port, ClientHello())
        answer = yield self.request(
            client,
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Client-Cert-Subject: CN=mallory\r\n"
            b"X-Client-Cert-Fingerprint: 00\r\n\r\n",
        )
        self.assertEqual(answer["status"], 200)
        sent = {name.lower() for name, _ in answer["echo"]["headers"]}
        self.assertNotIn("x-client-cert-subject", sent)
        self.assertNotIn("x-client-cert-fingerprint", sent)
        client.transport.loseConnection()

    @inlineCallbacks
    def test_reload(self) -> Deferred[None]:
        """
        Reloading takes new certificate files for new handshakes while an
        open connection goes on; a bad new file is refused and the
        certificate in use stays.
        """
        path = os.path.join(self.directory, "site.pem")
        self.ca.issue_cert("old.example.com").private_key_and_cert_chain_pem.write_to_path(path)
        port = self.https(config.TLS(certificates=[path]))
        kept = yield connect_tls(port, ClientHello())
        answer = yield self.request(kept)
        self.assertEqual(answer["status"], 200)

        self.ca.issue_cert("new.example.com").private_key_and_cert_chain_pem.write_to_path(path)
        self.service.reload_certificates()
        fresh = yield connect_tls(port, ClientHello())
        self.assertEqual(names(fresh.certificate), ["new.example.com"])
        fresh.transport.loseConnection()
        answer = yield self.request(kept)
        self.assertEqual(answer["status"], 200)
        self.assertEqual(names(kept.certificate), ["old.example.com"])

        with open(path, "wb") as f:
            f.write(b"-----BEGIN CERTIFICATE-----\ngarbage\n")
        self.service.reload_certificates()
        self.assertIn("TLS reload refused", self.logged())
        after = yield connect_tls(port, ClientHello())
        self.assertEqual(names(after.certificate), ["new.example.com"])
        after.transport.loseConnection()
        kept.transport.loseConnection()

    @inlineCallbacks
    def test_tcp_listener_terminates(self) -> Deferred[None]:
        """
        A TCP listener with TLS relays the decrypted bytes to a plain server.
        """
        origin = start_origin(self)
        pool = config.Pool("plain", servers=[config.Server(f"127.0.0.1:{origin.getHost().port}")])
        service = self.start(
            config.TCPListener(
                "tcp:0:interface=127.0.0.1", pool=pool, tls=config.TLS(certificates=[self.site_a])
            )
        )
        port = service.listeners[0].port
        assert port is not None
        client = yield connect_tls(port.getHost().port, ClientHello(ca=self.ca))
        answer = yield self.request(client)
        self.assertEqual(answer["status"], 200)
        self.assertNotIn("X-Forwarded-Proto", json.dumps(answer["echo"]))
        client.transport.loseConnection()

    def tls_pool(self, leaf: trustme.LeafCert, tls: config.UpstreamTLS) -> config.Pool:
        origin = start_tls_origin(self, leaf)
        return config.Pool(
            "secure", servers=[config.Server(f"127.0.0.1:{origin.getHost().port}", tls=tls)]
        )

    @inlineCallbacks
    def plain_get(self, port: int) -> Deferred[tuple[int, bytes]]:
        client = yield connect_raw(port)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        received = yield client.closed
        status, _, body = split_response(received)
        return status, body

    def plain(self, pool: config.Pool) -> int:
        service = self.start(
            config.HTTPListener("tcp:0:interface=127.0.0.1", routes=[config.Route(pool)])
        )
        port = service.listeners[0].port
        assert port is not None
        return port.getHost().port

    @inlineCallbacks
    def test_upstream_verified(self) -> Deferred[None]:
        """
        A server with C{UpstreamTLS} is reached over TLS when its certificate
        verifies: for C{server_name}, or for its IP address.
        """
        ca_path = write_ca(self.directory, "origins.pem", self.ca)
        named = self.tls_pool(
            self.ca.issue_cert("origin.internal"),
            config.UpstreamTLS(ca=ca_path, server_name="origin.internal"),
        )
        status, body = yield self.plain_get(self.plain(named))
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["uri"], "/")
        by_ip = self.tls_pool(self.ca.issue_cert("127.0.0.1"), config.UpstreamTLS(ca=ca_path))
        status, _ = yield self.plain_get(self.plain(by_ip))
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_upstream_refused(self) -> Deferred[None]:
        """
        A server whose certificate does not verify (another authority, or
        another name) gets no request: the client gets 502 and the log says
        why; C{verify=False} reaches it anyway.
        """
        ca_path = write_ca(self.directory, "origins.pem", self.ca)
        stranger = trustme.CA().issue_cert("origin.internal")
        pool = self.tls_pool(
            stranger, config.UpstreamTLS(ca=ca_path, server_name="origin.internal")
        )
        status, body = yield self.plain_get(self.plain(pool))
        self.assertEqual(status, 502)
        self.assertNotIn(b"127.0.0.1", body)
        self.assertIn("TLS with server 127.0.0.1", self.logged())
        self.assertIn("certificate verify failed", self.logged())

        wrong_name = self.tls_pool(
            self.ca.issue_cert("other.internal"),
            config.UpstreamTLS(ca=ca_path, server_name="origin.internal"),
        )
        status, _ = yield self.plain_get(self.plain(wrong_name))
        self.assertEqual(status, 502)
        self.assertIn("origin.internal", self.logged())

        unverified = self.tls_pool(stranger, config.UpstreamTLS(verify=False))
        status, _ = yield self.plain_get(self.plain(unverified))
        self.assertEqual(status, 200)

    @inlineCallbacks
    def test_http_to_https(self) -> Deferred[None]:
        """
        A plain listener with C{http_to_https} sends GET to the same host and
        target over HTTPS with 301, and other methods with 308.
        """
        service = self.start(config.HTTPListener("tcp:0:interface=127.0.0.1", http_to_https=8443))
        port = service.listeners[0].port
        assert port is not None
        client = yield connect_raw(port.getHost().port)
        client.transport.write(
            b"GET /a?b=1 HTTP/1.1\r\nHost: Example.com:8080\r\n\r\n"
            b"POST /form HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\n\r\nhi"
        )
        received = yield client.closed
        first, _, second = received.partition(b"\r\n\r\n")
        status, headers, _ = split_response(first + b"\r\n\r\n")
        self.assertEqual(status, 301)
        self.assertEqual(headers[b"location"], [b"https://example.com:8443/a?b=1"])
        second = second[second.index(b"HTTP/1.1") :]
        status, headers, _ = split_response(second)
        self.assertEqual(status, 308)
        self.assertEqual(headers[b"location"], [b"https://example.com:8443/form"])
        self.assertEqual(headers[b"connection"], [b"close"])


class _LegacyServer(ContextFactory):
    """
    A server context that still allows TLS 1.0, for a control server.
    """

    def __init__(self, path: str) -> None:
        pair = load_key_pair(path)
        self.context = SSL.Context(SSL.TLS_SERVER_METHOD)
        self.context.set_min_proto_version(SSL.TLS1_VERSION)
        self.context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        self.context.use_certificate(pair.certificate)
        self.context.use_privatekey(pair.key)  # type: ignore[arg-type]

    def getContext(self) -> SSL.Context:
        return self.context
