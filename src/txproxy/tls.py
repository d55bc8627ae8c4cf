# -*- test-case-name: tests.test_tls -*-
"""
TLS through pyOpenSSL: a listener's contexts (certificates chosen by SNI, ALPN,
client certificates, reload) and the client side of TLS towards servers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from ipaddress import ip_address

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtensionOID, NameOID
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.ssl import Certificate as TwistedCertificate
from twisted.internet.ssl import (
    PrivateCertificate,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from zope.interface import implementer

from txproxy import config

__all__ = [
    "ALPN_HTTP",
    "CURVES",
    "INTERMEDIATE_CIPHERS",
    "CertificateError",
    "KeyPair",
    "NameTable",
    "ServerTLS",
    "certificate_errors",
    "client_certificate_facts",
    "load_key_pair",
    "upstream_tls",
]

INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)
"""
Mozilla's "intermediate" TLS 1.2 cipher list (version 5.7); TLS 1.3 keeps
OpenSSL's three AEAD suites, all of which that profile allows.
"""

CURVES = b"X25519:P-256"
"""
The key exchange groups offered, in order of preference.
"""

ALPN_HTTP = (b"h2", b"http/1.1")
"""
What an HTTP listener offers by ALPN, in order of preference.
"""

_VERSIONS = {"TLSv1.2": SSL.TLS1_2_VERSION, "TLSv1.3": SSL.TLS1_3_VERSION}
_VERIFY_CLIENT = {
    "none": SSL.VERIFY_NONE,
    "optional": SSL.VERIFY_PEER,
    "required": SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
}
_OPTIONS = (
    SSL.OP_CIPHER_SERVER_PREFERENCE
    | SSL.OP_NO_COMPRESSION
    | SSL.OP_NO_RENEGOTIATION
    | SSL.OP_SINGLE_ECDH_USE
)


class CertificateError(Exception):
    """
    A certificate, key or authority file could not be used.

    @ivar path: the file.
    @ivar reason: what is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@frozen
class KeyPair:
    """
    A certificate, its chain and its private key, as loaded from PEM files.

    @ivar path: the file the certificate came from, for messages.
    @ivar certificate: the leaf certificate.
    @ivar chain: the intermediate certificates sent after it.
    @ivar key: its private key.
    @ivar names: the DNS names (lower case, wildcards as C{*.example.com}) and
        IP addresses it is valid for, from its subjectAltName.
    """

    path: str
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes
    names: tuple[str, ...]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as pem:
            return pem.read()
    except OSError as e:
        raise CertificateError(path, e.strerror or str(e)) from None


def _certificates(path: str, data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(path, "no PEM certificate in it") from None


def _private_key(path: str, data: bytes) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise CertificateError(path, f"no usable private key in it: {e}") from None


def certificate_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """
    The names a certificate is valid for: its subjectAltName DNS names and IP
    addresses, or its common name when it has no subjectAltName at all.
    """
    try:
        alt = certificate.extensions.get_extension_for_oid(
            ExtensionOID.SUBJECT_ALTERNATIVE_NAME
        ).value
    except x509.ExtensionNotFound:
        common = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return tuple(str(each.value).lower() for each in common)
    assert isinstance(alt, x509.SubjectAlternativeName)
    dns = [name.lower().rstrip(".") for name in alt.get_values_for_type(x509.DNSName)]
    ips = [str(address) for address in alt.get_values_for_type(x509.IPAddress)]
    return tuple(dns + ips)


def load_key_pair(entry: config.Certificate | str) -> KeyPair:
    """
    Read a certificate entry: one PEM file with key, certificate and chain,
    or a L{config.Certificate} naming separate files.

    @raise CertificateError: when a file is missing or unreadable, holds no
        certificate or key, or the key does not belong to the certificate.
    """
    if isinstance(entry, str):
        entry = config.Certificate(cert=entry)
    data = _read(entry.cert)
    certificates = _certificates(entry.cert, data)
    key = _private_key(entry.key, _read(entry.key)) if entry.key else _private_key(entry.cert, data)
    chain = certificates[1:]
    if entry.chain is not None:
        chain += _certificates(entry.chain, _read(entry.chain))
    leaf = certificates[0]
    public = key.public_key()
    if public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise CertificateError(entry.key or entry.cert, "the key does not match the certificate")
    return KeyPair(entry.cert, leaf, tuple(chain), key, certificate_names(leaf))


class NameTable:
    """
    Finds the first certificate valid for a server name: exact names first,
    then wildcards, which stand for exactly one label (RFC 6125 6.4.3).
    """

    def __init__(self, names: Sequence[Sequence[str]]) -> None:
        """
        @param names: for each certificate, in order, the names it is valid for.
        """
        self._exact: dict[str, int] = {}
        self._wildcard: dict[str, int] = {}
        for index, each in enumerate(names):
            for name in each:
                if name.startswith("*."):
                    self._wildcard.setdefault(name[2:], index)
                else:
                    self._exact.setdefault(name, index)

    def lookup(self, server_name: str) -> int | None:
        """
        The index of the certificate for C{server_name}, or L{None} if none is
        valid for it.
        """
        name = server_name.lower().rstrip(".")
        found = self._exact.get(name)
        if found is not None:
            return found
        _, dot, parent = name.partition(".")
        return self._wildcard.get(parent) if dot else None


def _authorities(path: str) -> list[x509.Certificate]:
    return _certificates(path, _read(path))


def _groups(context: SSL.Context) -> None:
    """
    Offer only L{CURVES}. pyOpenSSL has no call for a group list, so this
    goes through its bindings when they have one; else OpenSSL's defaults,
    which include both, stay.
    """
    try:
        from OpenSSL._util import lib
    except ImportError:
        return
    setter = getattr(lib, "SSL_CTX_set1_curves_list", None)
    raw = getattr(context, "_context", None)
    if setter is not None and raw is not None:
        setter(raw, CURVES)


def _alpn_chooser(offered: Sequence[bytes]) -> Callable[[SSL.Connection, list[bytes]], bytes]:
    def choose(connection: SSL.Connection, protocols: list[bytes]) -> bytes:
        for protocol in offered:
            if protocol in protocols:
                return protocol
        return SSL.NO_OVERLAPPING_PROTOCOLS  # type: ignore[return-value]

    return choose


def _context(
    pair: KeyPair,
    settings: config.TLS,
    alpn: Sequence[bytes],
    on_server_name: Callable[[SSL.Connection], None],
) -> SSL.Context:
    """
    A server context for one certificate with txproxy's defaults and the
    listener's settings.
    """
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(_VERSIONS[settings.min_version])
    context.set_options(_OPTIONS)
    try:
        context.set_cipher_list((settings.ciphers or INTERMEDIATE_CIPHERS).encode("ascii"))
    except SSL.Error as e:
        raise CertificateError(pair.path, f"cipher list {settings.ciphers!r}: {e}") from None
    _groups(context)
    context.use_certificate(pair.certificate)
    context.use_privatekey(pair.key)  # type: ignore[arg-type]
    for intermediate in pair.chain:
        context.add_extra_chain_cert(intermediate)
    # Resumption: tickets (on by default) and a session cache; the session id
    # context is required once client certificates are asked for.
    context.set_session_cache_mode(SSL.SESS_CACHE_SERVER)
    context.set_session_id(b"txproxy")
    if settings.client_ca is not None:
        authorities = _authorities(settings.client_ca)
        try:
            context.load_verify_locations(settings.client_ca)
        except SSL.Error as e:
            raise CertificateError(settings.client_ca, f"unusable authorities: {e}") from None
        context.set_client_ca_list(
            [crypto.X509.from_cryptography(each).get_subject() for each in authorities]
        )
    context.set_verify(_VERIFY_CLIENT[settings.verify_client])
    if alpn:
        context.set_alpn_select_callback(_alpn_chooser(alpn))
    context.set_tlsext_servername_callback(on_server_name)
    return context


@frozen
class _Contexts:
    """
    The contexts of a listener's certificates, the first the default.
    """

    contexts: tuple[SSL.Context, ...]
    names: NameTable
    pairs: tuple[KeyPair, ...]

    def for_name(self, server_name: bytes | None) -> SSL.Context:
        if server_name:
            found = self.names.lookup(server_name.decode("ascii", "replace"))
            if found is not None:
                return self.contexts[found]
        return self.contexts[0]


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    The TLS side of a listener: makes each new connection with the context of
    its default certificate, then switches to the certificate for the name the
    client sends by SNI.

    L{reload} reads the files again, and L{configure} takes new settings;
    new handshakes use what they loaded, and connections already made keep
    theirs.

    @ivar settings: the listener's TLS configuration.
    """

    _log = Logger()

    def __init__(self, settings: config.TLS, alpn: Sequence[bytes] = ()) -> None:
        """
        @param alpn: the protocols offered by ALPN, by preference; none for no ALPN.
        @raise CertificateError: when a file cannot be used.
        """
        self.settings = settings
        self._alpn = tuple(alpn)
        self._contexts = self._load()

    def _load(
        self, settings: config.TLS | None = None, alpn: tuple[bytes, ...] | None = None
    ) -> _Contexts:
        """
        Read the files of C{settings} (by default, those in use) and make
        their contexts, offering C{alpn} (by default, what is offered now).

        @raise CertificateError: when a file cannot be used.
        """
        settings = self.settings if settings is None else settings
        alpn = self._alpn if alpn is None else alpn
        pairs = tuple(load_key_pair(entry) for entry in settings.certificates)
        contexts = tuple(_context(pair, settings, alpn, self._server_name) for pair in pairs)
        return _Contexts(contexts, NameTable([pair.names for pair in pairs]), pairs)

    @property
    def key_pairs(self) -> tuple[KeyPair, ...]:
        """
        The certificates in use, in configuration order.
        """
        return self._contexts.pairs

    def _server_name(self, connection: SSL.Connection) -> None:
        context = self._contexts.for_name(connection.get_servername())
        if context is not connection.get_context():
            connection.set_context(context)

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:  # noqa: N803
        """
        A new server-side connection, on the default certificate until SNI says otherwise.
        """
        return SSL.Connection(self._contexts.contexts[0], None)

    def reload(self) -> bool:
        """
        Read the certificate files again and use them for new handshakes.

        @return: whether the new files were taken; when one cannot be used, the
            error is logged and the certificates in use stay.
        """
        return self.configure(self.settings, self._alpn)

    def configure(self, settings: config.TLS, alpn: Sequence[bytes] = ()) -> bool:
        """
        Take a listener's new TLS settings, as a reload that keeps the
        listener does, reading their files: new handshakes use them.

        @param alpn: the protocols offered by ALPN from now on, by preference.
        @return: whether they were taken; when a file cannot be used, the
            error is logged and the settings and certificates in use stay.
        """
        offered = tuple(alpn)
        try:
            contexts = self._load(settings, offered)
        except CertificateError as e:
            self._log.error(
                "TLS reload refused, keeping the certificates in use: {path}: {reason}",
                path=e.path,
                reason=e.reason,
            )
            return False
        self.settings = settings
        self._alpn = offered
        self._contexts = contexts
        self._log.info(
            "TLS certificates reloaded: {names}",
            names=", ".join("/".join(pair.names) or pair.path for pair in contexts.pairs),
        )
        return True


def client_certificate_facts(certificate: x509.Certificate) -> tuple[str, str]:
    """
    What txproxy tells servers of a verified client certificate: its subject
    as an RFC 4514 string, and its SHA-256 fingerprint in hex.
    """
    der = certificate.public_bytes(serialization.Encoding.DER)
    return certificate.subject.rfc4514_string(), hashlib.sha256(der).hexdigest()


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """
    Speaks TLS to a server without verifying it, as configured with
    C{UpstreamTLS(verify=False)}, still sending SNI.
    """

    def __init__(self, context: SSL.Context, server_name: str | None) -> None:
        self._context = context
        self._server_name = server_name.encode("idna") if server_name else None

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:  # noqa: N803
        connection = SSL.Connection(self._context, None)
        if self._server_name is not None:
            connection.set_tlsext_host_name(self._server_name)
        return connection


def _is_ip(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


def upstream_tls(settings: config.UpstreamTLS, host: str) -> IOpenSSLClientConnectionCreator:
    """
    How to speak TLS to a server at C{host}: verify its certificate against
    C{settings.ca} (or the system's authorities) for C{settings.server_name}
    (or C{host}, a name or an IP address) with service_identity, send that
    name by SNI, and present the client certificate if one is configured.

    @raise CertificateError: when a file cannot be used.
    """
    name = settings.server_name or host
    client = None
    if settings.client_certificate is not None:
        pair = load_key_pair(settings.client_certificate)
        key_pem = pair.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cert_pem = pair.certificate.public_bytes(serialization.Encoding.PEM)
        client = PrivateCertificate.loadPEM(cert_pem + key_pem)  # type: ignore[no-untyped-call]
    if not settings.verify:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        if client is not None:
            context.use_certificate(client.original)
            context.use_privatekey(client.privateKey.original)
        return _Unverified(context, None if _is_ip(name) else name)
    if settings.ca is not None:
        trust = trustRootFromCertificates(  # type: ignore[no-untyped-call]
            [
                TwistedCertificate.loadPEM(each.public_bytes(serialization.Encoding.PEM))
                for each in _authorities(settings.ca)
            ]
        )
    else:
        trust = platformTrust()  # type: ignore[no-untyped-call]
    return optionsForClientTLS(
        name,
        trustRoot=trust,
        clientCertificate=client,
        extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_2},
    )


def certificate_errors(proxy: config.Proxy) -> list[CertificateError]:
    """
    Read every certificate, key and authority file a configuration names,
    as starting it would; return what cannot be used, so that C{--check}
    reports it and a start refuses it before anything listens.
    """
    errors = []
    for listener in proxy.listeners:
        if listener.tls is not None:
            try:
                ServerTLS(listener.tls)
            except CertificateError as e:
                errors.append(e)
    for pool in proxy.pools:
        for server in pool.servers:
            if server.tls is not None:
                try:
                    upstream_tls(server.tls, server.address.rpartition(":")[0].strip("[]"))
                except CertificateError as e:
                    errors.append(e)
    return errors
