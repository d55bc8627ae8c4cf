# -*- test-case-name: tests.test_clienthello -*-
"""
Tests for L{txproxy.clienthello}: real ClientHellos made by OpenSSL, split and
reframed every way, and hand-made ones that break the grammar.
"""

from __future__ import annotations

from itertools import pairwise

from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from txproxy.clienthello import (
    MAX_CLIENT_HELLO,
    NEED_MORE,
    ClientHello,
    ClientHelloReader,
    NotClientHello,
    PeekResult,
    SNIRoutes,
)

VERSIONS = {"TLSv1.2": SSL.TLS1_2_VERSION, "TLSv1.3": SSL.TLS1_3_VERSION}


def openssl_hello(version: str, server_name: bytes | None) -> bytes:
    """
    The first flight of an OpenSSL client: its ClientHello, as records.

    @param version: the one TLS version the client offers, a key of L{VERSIONS}.
    @param server_name: the SNI host name it sends, or L{None} for none.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(VERSIONS[version])
    context.set_max_proto_version(VERSIONS[version])
    connection = SSL.Connection(context, None)
    if server_name is not None:
        connection.set_tlsext_host_name(server_name)
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(1024 * 1024)


def record(fragment: bytes, content_type: int = 22, version: bytes = b"\x03\x01") -> bytes:
    """
    One TLS record carrying C{fragment}.
    """
    return bytes([content_type]) + version + len(fragment).to_bytes(2, "big") + fragment


def message_of(records: bytes) -> bytes:
    """
    The handshake message that OpenSSL sent in one record.
    """
    length = int.from_bytes(records[3:5], "big")
    assert len(records) == 5 + length, "expected one record"
    return records[5:]


def reframed(message: bytes, *cuts: int) -> bytes:
    """
    A handshake message in several records, cut at the given offsets.
    """
    edges = [0, *cuts, len(message)]
    return b"".join(record(message[start:end]) for start, end in pairwise(edges))


def vector(length_size: int, data: bytes) -> bytes:
    """
    A TLS vector: its length, then its bytes.
    """
    return len(data).to_bytes(length_size, "big") + data


def extension(kind: int, data: bytes) -> bytes:
    """
    One extension of a ClientHello.
    """
    return kind.to_bytes(2, "big") + vector(2, data)


def server_names(*names: tuple[int, bytes]) -> bytes:
    """
    A server_name extension listing C{(name_type, name)} entries.
    """
    entries = b"".join(bytes([kind]) + vector(2, name) for kind, name in names)
    return extension(0, vector(2, entries))


def hello(
    extensions: bytes | None = b"",
    version: bytes = b"\x03\x03",
    session_id: bytes = b"",
    suites: bytes = b"\x13\x01\x00\x2f",
    compressions: bytes = b"\x00",
    trailer: bytes = b"",
) -> bytes:
    """
    A hand-made ClientHello in one record.

    @param extensions: the extensions, one after the other, or L{None} to
        leave the extensions field out (as TLS 1.2 allows).
    @param trailer: bytes after the extensions, inside the message.
    """
    body = (
        version
        + b"\x5a" * 32
        + vector(1, session_id)
        + vector(2, suites)
        + vector(1, compressions)
        + (b"" if extensions is None else vector(2, extensions))
        + trailer
    )
    return record(b"\x01" + vector(3, body))


def fed(data: bytes, reader: ClientHelloReader | None = None) -> PeekResult:
    """
    What a reader makes of C{data} given in one read.
    """
    return (reader or ClientHelloReader()).feed(data)


class OpenSSLHelloTests(SynchronousTestCase):
    """
    L{ClientHelloReader} on ClientHellos that OpenSSL made, for TLS 1.2 and 1.3,
    with and without SNI.
    """

    def cases(self) -> list[tuple[str, bytes | None, bytes]]:
        """
        Each version with and without a server name, and the bytes sent.
        """
        return [
            (version, name, openssl_hello(version, name))
            for version in VERSIONS
            for name in (b"db.example.com", None)
        ]

    def expected(self, name: bytes | None) -> ClientHello:
        return ClientHello(None if name is None else name.decode())

    def test_whole(self) -> None:
        """
        A ClientHello read at once gives its server name, or none without SNI.
        """
        for version, name, data in self.cases():
            with self.subTest(version=version, name=name):
                self.assertEqual(fed(data), self.expected(name))

    def test_split_at_every_byte(self) -> None:
        """
        Cut in two reads at any byte, the first read needs more and the second
        gives the same answer as one read.
        """
        for version, name, data in self.cases():
            for cut in range(1, len(data)):
                reader = ClientHelloReader()
                self.assertIs(reader.feed(data[:cut]), NEED_MORE, (version, name, cut))
                self.assertEqual(reader.feed(data[cut:]), self.expected(name), (version, cut))

    def test_byte_by_byte(self) -> None:
        """
        Read a byte at a time, every prefix needs more and the last byte decides:
        a truncated ClientHello is never taken for a whole one.
        """
        for version, name, data in self.cases():
            reader = ClientHelloReader()
            for index in range(len(data) - 1):
                self.assertIs(reader.feed(data[index : index + 1]), NEED_MORE, (version, index))
            self.assertEqual(reader.feed(data[-1:]), self.expected(name))

    def test_across_two_records(self) -> None:
        """
        A ClientHello carried by two records, cut anywhere (even inside its
        four-byte header), gives the same name, however it is read.
        """
        for version in VERSIONS:
            message = message_of(openssl_hello(version, b"db.example.com"))
            for cut in (1, 3, 4, 5, 40, len(message) // 2, len(message) - 1):
                data = reframed(message, cut)
                self.assertEqual(fed(data), ClientHello("db.example.com"), (version, cut))
                for split in range(1, len(data)):
                    reader = ClientHelloReader()
                    self.assertIs(reader.feed(data[:split]), NEED_MORE)
                    self.assertEqual(reader.feed(data[split:]), ClientHello("db.example.com"))

    def test_one_byte_records(self) -> None:
        """
        A ClientHello sent one byte a record, which TLS allows, is read.
        """
        message = message_of(openssl_hello("TLSv1.3", b"db.example.com"))
        data = reframed(message, *range(1, len(message)))
        self.assertEqual(len(data), 6 * len(message))
        self.assertEqual(fed(data), ClientHello("db.example.com"))

    def test_bytes_after_the_hello(self) -> None:
        """
        Bytes after the ClientHello (the client's next records) do not change
        the answer.
        """
        data = openssl_hello("TLSv1.3", b"db.example.com")
        self.assertEqual(fed(data + record(b"\x00" * 40, 23)), ClientHello("db.example.com"))

    def test_answer_kept(self) -> None:
        """
        Once decided, the reader gives the same answer whatever comes next.
        """
        reader = ClientHelloReader()
        first = reader.feed(openssl_hello("TLSv1.2", b"db.example.com"))
        self.assertEqual(reader.feed(b"GET / HTTP/1.1\r\n"), first)
        reader = ClientHelloReader()
        first = reader.feed(b"GET /")
        self.assertIsInstance(first, NotClientHello)
        self.assertEqual(reader.feed(openssl_hello("TLSv1.2", b"db.example.com")), first)


class RecordLayerTests(SynchronousTestCase):
    """
    L{ClientHelloReader} on bytes that are not TLS records carrying a ClientHello.
    """

    def assert_not_hello(self, data: bytes, reason: str) -> None:
        """
        C{data} read at once is not a ClientHello, for C{reason}.
        """
        self.assertEqual(fed(data), NotClientHello(reason))

    def test_other_protocol_at_first_byte(self) -> None:
        """
        A client of another protocol is known by its first byte, so that it is
        not kept waiting for bytes it will never send.
        """
        for data in (b"G", b"GET / HTTP/1.1\r\n\r\n", b"SSH-2.0-OpenSSH_9.6\r\n", b"\x00"):
            self.assert_not_hello(data, "not a TLS handshake record")

    def test_sslv2_hello(self) -> None:
        """
        An SSL 2 style ClientHello, which has no SNI, is not read.
        """
        self.assert_not_hello(b"\x80\x2e\x01\x00\x02", "not a TLS handshake record")

    def test_record_version(self) -> None:
        """
        A record whose version is not 3.x is refused at its second byte.
        """
        self.assert_not_hello(b"\x16\x04", "not a TLS record version")

    def test_alert_record(self) -> None:
        """
        A record other than a handshake record is refused.
        """
        self.assert_not_hello(record(b"\x02\x28", 21), "not a TLS handshake record")

    def test_record_lengths(self) -> None:
        """
        An empty record, or one over 2^14 bytes, is refused from its header,
        without waiting for its body.
        """
        self.assert_not_hello(b"\x16\x03\x01\x00\x00", "a TLS record of 0 bytes")
        self.assert_not_hello(b"\x16\x03\x01\x40\x01", "a TLS record of 16385 bytes")

    def test_other_handshake_message(self) -> None:
        """
        A handshake message other than a ClientHello (here a ServerHello) is refused.
        """
        data = record(b"\x02\x00\x00\x02\x03\x03")
        self.assert_not_hello(data, "the first handshake message is not a ClientHello")

    def test_other_record_between_fragments(self) -> None:
        """
        A record of another type between the fragments of a ClientHello is refused.
        """
        message = message_of(openssl_hello("TLSv1.2", b"db.example.com"))
        data = record(message[:50]) + record(message[50:], 23)
        self.assert_not_hello(data, "not a TLS handshake record")

    def test_huge_declared_length(self) -> None:
        """
        A ClientHello said to be longer than the limit is refused as soon as
        its length is read, not after the bytes are buffered.
        """
        self.assert_not_hello(
            record(b"\x01\x10\x00\x00"), "a ClientHello of 1048576 bytes, over 65536"
        )
        reader = ClientHelloReader(limit=100)
        self.assertEqual(
            reader.feed(record(b"\x01\x00\x00\x5c")),
            NotClientHello("a ClientHello of 92 bytes, over 100"),
        )
        self.assertIs(ClientHelloReader(limit=100).feed(record(b"\x01\x00\x00\x5b")), NEED_MORE)

    def test_limit_bounds_bytes_read(self) -> None:
        """
        A ClientHello within the limit but sent in tiny records gives up once
        L{MAX_CLIENT_HELLO} bytes are read without a whole one: the reader
        never holds more.
        """
        message = b"\x01" + vector(3, b"\x03\x03" + b"\x00" * 60000)
        data = reframed(message, *range(1, len(message)))
        reader = ClientHelloReader()
        self.assertIs(reader.feed(data[: MAX_CLIENT_HELLO - 1]), NEED_MORE)
        self.assertEqual(
            reader.feed(data[MAX_CLIENT_HELLO - 1 : MAX_CLIENT_HELLO]),
            NotClientHello("no whole ClientHello in the first 65536 bytes"),
        )

    def test_limit_exactly_reached(self) -> None:
        """
        A ClientHello that is whole within the limit is read, even in the read
        that reaches it; one byte less of limit and it is refused.
        """
        data = openssl_hello("TLSv1.2", b"db.example.com")
        self.assertEqual(
            fed(data, ClientHelloReader(limit=len(data))), ClientHello("db.example.com")
        )
        reader = ClientHelloReader(limit=len(data) - 1)
        self.assertIs(reader.feed(data[:-2]), NEED_MORE)
        self.assertIsInstance(reader.feed(data[-2:-1]), NotClientHello)

    def test_garbage_handshake(self) -> None:
        """
        Random bytes after a plausible header are refused, not crashed on.
        """
        garbage = bytes(range(256)) * 2
        data = record(b"\x01" + vector(3, garbage))
        self.assertIsInstance(fed(data), NotClientHello)


class ClientHelloGrammarTests(SynchronousTestCase):
    """
    L{ClientHelloReader} on hand-made ClientHellos, well and badly formed.
    """

    def test_hand_made_reads(self) -> None:
        """
        The hand-made ClientHello of these tests reads, so that each refusal
        below is for the one thing changed.
        """
        data = hello(server_names((0, b"db.example.com")))
        self.assertEqual(fed(data), ClientHello("db.example.com"))

    def test_no_extensions(self) -> None:
        """
        A TLS 1.2 ClientHello without an extensions field has no server name.
        """
        self.assertEqual(fed(hello(None)), ClientHello(None))

    def test_name_kept_as_sent(self) -> None:
        """
        The name is given as sent, with its case and trailing dot: matching
        ignores them, logs show them.
        """
        data = hello(server_names((0, b"DB.Example.com.")))
        self.assertEqual(fed(data), ClientHello("DB.Example.com."))

    def test_other_extensions_skipped(self) -> None:
        """
        Extensions before and after the server name are skipped.
        """
        extensions = extension(10, b"\x00\x02\x00\x1d") + server_names((0, b"a.example.net"))
        extensions += extension(43, b"\x02\x03\x04")
        self.assertEqual(fed(hello(extensions)), ClientHello("a.example.net"))

    def test_other_name_types_skipped(self) -> None:
        """
        Entries of name types other than host_name are skipped, as Go does; a
        list with no host name gives no name.
        """
        data = hello(server_names((7, b"whatever"), (0, b"db.example.com")))
        self.assertEqual(fed(data), ClientHello("db.example.com"))
        self.assertEqual(fed(hello(server_names((7, b"whatever")))), ClientHello(None))

    def assert_refused(self, data: bytes, reason: str) -> None:
        """
        C{data} is not a ClientHello, for C{reason}.
        """
        self.assertEqual(fed(data), NotClientHello(reason))

    def test_duplicate_server_name_extension(self) -> None:
        """
        Two server_name extensions are refused (RFC 8446 4.2): the server might
        read the other.
        """
        extensions = server_names((0, b"a.example.net")) + server_names((0, b"db.example.com"))
        self.assert_refused(hello(extensions), "extension 0 twice")

    def test_duplicate_other_extension(self) -> None:
        """
        Any extension given twice is refused.
        """
        self.assert_refused(hello(extension(10, b"") * 2), "extension 10 twice")

    def test_two_host_names(self) -> None:
        """
        Two host names in one list are refused (RFC 6066 3).
        """
        data = hello(server_names((0, b"a.example.net"), (0, b"db.example.com")))
        self.assert_refused(data, "two host names")

    def test_empty_lists_and_names(self) -> None:
        """
        An empty server name list, an empty name, or bytes after the list are refused.
        """
        self.assert_refused(hello(extension(0, b"")), "server_name_list runs past its end")
        self.assert_refused(hello(extension(0, b"\x00\x00")), "an empty server_name_list")
        self.assert_refused(
            hello(server_names((0, b""))), "a server name that is not a DNS host name"
        )
        data = hello(extension(0, vector(2, b"\x00" + vector(2, b"a.example.net")) + b"!"))
        self.assert_refused(data, "bytes after the server_name_list")

    def test_names_that_are_not_host_names(self) -> None:
        """
        A name with bytes a DNS name cannot have is refused, lest it match a
        wildcard it only ends like.
        """
        for name in (
            b"evil\x00.example.net",
            b"evil .example.net",
            b"\xc3\xa9.example.net",
            b"a..example.net",
            b".example.net",
            b"-a.example.net",
            b"a.example.net..",
            b"*.example.net",
            b"a" * 64 + b".example.net",
            b"a." * 127 + b"a",
        ):
            with self.subTest(name=name):
                data = hello(server_names((0, name)))
                self.assert_refused(data, "a server name that is not a DNS host name")

    def test_longest_host_name(self) -> None:
        """
        A 253-character name, with or without its trailing dot, is read.
        """
        name = b"a." * 126 + b"a"
        self.assertEqual(len(name), 253)
        self.assertEqual(fed(hello(server_names((0, name)))), ClientHello(name.decode()))
        dotted = name + b"."
        self.assertEqual(fed(hello(server_names((0, dotted)))), ClientHello(dotted.decode()))

    def test_fields_that_break_the_grammar(self) -> None:
        """
        Each fixed field of the ClientHello is checked.
        """
        cases = [
            (hello(version=b"\x02\x00"), "not a TLS ClientHello version"),
            (hello(session_id=b"x" * 33), "a session id over 32 bytes"),
            (hello(suites=b""), "cipher suites of 0 bytes"),
            (hello(suites=b"\x13\x01\x00"), "cipher suites of 3 bytes"),
            (hello(compressions=b""), "no compression method"),
            (hello(b"", trailer=b"x"), "bytes after the extensions"),
            (hello(b"\x00\x00\x00\x05ab"), "extension data runs past its end"),
            (hello(b"\x00"), "extension type runs past its end"),
            (record(b"\x01\x00\x00\x10" + b"\x03\x03" + b"\x00" * 14), "random runs past its end"),
        ]
        for data, reason in cases:
            with self.subTest(reason=reason):
                self.assert_refused(data, reason)


class SNIRoutesTests(SynchronousTestCase):
    """
    Tests for L{SNIRoutes}.
    """

    def test_exact(self) -> None:
        """
        An exact pattern takes its name and no other.
        """
        routes = SNIRoutes([("db.example.com", "db")])
        self.assertEqual(routes.pool_for("db.example.com"), "db")
        self.assertIsNone(routes.pool_for("x.db.example.com"))
        self.assertIsNone(routes.pool_for("example.com"))

    def test_case_and_trailing_dot_ignored(self) -> None:
        """
        Names and patterns match whatever their case, with or without a trailing dot.
        """
        routes = SNIRoutes([("DB.example.COM", "db"), ("*.Example.NET", "net")])
        self.assertEqual(routes.pool_for("db.EXAMPLE.com."), "db")
        self.assertEqual(routes.pool_for("A.example.net."), "net")

    def test_wildcard_takes_any_subdomain(self) -> None:
        """
        As nginx's C{server_name *.example.net}, a wildcard takes names one or
        more labels below it, but not the name itself.
        """
        routes = SNIRoutes([("*.example.net", "net")])
        self.assertEqual(routes.pool_for("a.example.net"), "net")
        self.assertEqual(routes.pool_for("a.b.example.net"), "net")
        self.assertIsNone(routes.pool_for("example.net"))
        self.assertIsNone(routes.pool_for("aexample.net"))
        self.assertIsNone(routes.pool_for("a.example.network"))

    def test_exact_beats_wildcard(self) -> None:
        """
        An exact pattern wins over a wildcard that matches too, in either order.
        """
        for pairs in (
            [("*.example.net", "wild"), ("a.example.net", "exact")],
            [("a.example.net", "exact"), ("*.example.net", "wild")],
        ):
            routes = SNIRoutes(pairs)
            self.assertEqual(routes.pool_for("a.example.net"), "exact")
            self.assertEqual(routes.pool_for("b.example.net"), "wild")

    def test_longest_wildcard_wins(self) -> None:
        """
        Of two wildcards that match, the longer wins, in either order.
        """
        for pairs in (
            [("*.example.net", "short"), ("*.b.example.net", "long")],
            [("*.b.example.net", "long"), ("*.example.net", "short")],
        ):
            routes = SNIRoutes(pairs)
            self.assertEqual(routes.pool_for("a.b.example.net"), "long")
            self.assertEqual(routes.pool_for("b.example.net"), "short")

    def test_first_of_same_pattern_kept(self) -> None:
        """
        Of two routes with the same pattern, in any case, the first is kept.
        """
        routes = SNIRoutes([("db.example.com", "first"), ("DB.example.com", "second")])
        self.assertEqual(routes.pool_for("db.example.com"), "first")

    def test_not_host_names(self) -> None:
        """
        Names that are not ASCII host names match nothing, not even a wildcard
        they end like; in particular the Kelvin sign is not taken for a C{k}.
        """
        routes = SNIRoutes([("*.example.net", "net"), ("k.example.com", "k")])
        for name in ("", ".", ".example.net", "a..example.net", "\u212a.example.com"):
            with self.subTest(name=name):
                self.assertIsNone(routes.pool_for(name))

    def test_truth(self) -> None:
        """
        A table is true when it has a route.
        """
        self.assertFalse(SNIRoutes([]))
        self.assertTrue(SNIRoutes([("*.example.net", "net")]))
