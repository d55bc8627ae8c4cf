# -*- test-case-name: tests.test_http_headers -*-
"""
Tests for L{txproxy.http.headers}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txproxy.http.events import Headers, RequestHead, ResponseHead
from txproxy.http.headers import (
    HIDDEN_RESPONSE_HEADERS,
    HOP_BY_HOP,
    HeaderEdits,
    forward_request_headers,
    forward_response_headers,
    header_value,
)

NO_EDITS = HeaderEdits()

# What forward_request_headers appends for a request to Host: a.example from 192.0.2.7.
ADDED = (
    (b"X-Forwarded-For", b"192.0.2.7"),
    (b"X-Forwarded-Proto", b"http"),
    (b"X-Forwarded-Host", b"a.example"),
    (b"Via", b"1.1 txproxy"),
)


def request(
    headers: Headers, *, upgrade: bool = False, host: bytes | None = b"a.example"
) -> RequestHead:
    """
    Make a C{GET /} request head with C{headers} after its C{Host} field.
    """
    if host is not None:
        headers = ((b"Host", host), *headers)
    return RequestHead(b"GET", b"/", b"1.1", headers, upgrade=upgrade, host=host)


def forwarded(head: RequestHead, edits: HeaderEdits = NO_EDITS) -> Headers:
    """
    The fields C{head} is forwarded with, from client 192.0.2.7 over plain HTTP.
    """
    return forward_request_headers(head, edits, "192.0.2.7", b"http")


def response(headers: Headers, status: int = 200, version: bytes = b"1.1") -> ResponseHead:
    """
    Make a response head.
    """
    return ResponseHead(status, b"OK", version, headers)


class HeaderValueTests(SynchronousTestCase):
    """
    Tests for L{header_value}.
    """

    def test_first_value_of_any_case(self) -> None:
        """
        The value of the first field of the name is found, whatever the case of
        the name as sent.
        """
        headers = ((b"A", b"1"), (b"ACCEPT", b"text/html"), (b"accept", b"*/*"))
        self.assertEqual(header_value(headers, b"accept"), b"text/html")

    def test_missing(self) -> None:
        """
        A name no field has gives L{None}.
        """
        self.assertIsNone(header_value(((b"A", b"1"),), b"b"))


class HeaderEditsTests(SynchronousTestCase):
    """
    Tests for L{HeaderEdits}.
    """

    def test_from_config(self) -> None:
        """
        A route's str names and values become bytes, removed names in lower
        case, set names as written, values as UTF-8.
        """
        edits = HeaderEdits.from_config(["X-Debug"], [("X-Env", "prod"), ("X-Name", "café")])
        self.assertEqual(edits.remove, frozenset({b"x-debug"}))
        self.assertEqual(edits.set, ((b"X-Env", b"prod"), (b"X-Name", b"caf\xc3\xa9")))

    def test_no_edits_same_headers(self) -> None:
        """
        Without edits, the very same headers are returned.
        """
        headers = ((b"A", b"1"),)
        self.assertIs(NO_EDITS.apply(headers), headers)

    def test_remove(self) -> None:
        """
        Removing a name removes every field of it, whatever its case, and
        keeps the order of the others.
        """
        edits = HeaderEdits.from_config(["x-debug"], [])
        headers = ((b"A", b"1"), (b"X-Debug", b"1"), (b"B", b"2"), (b"x-DEBUG", b"2"))
        self.assertEqual(edits.apply(headers), ((b"A", b"1"), (b"B", b"2")))

    def test_set_replaces_every_field(self) -> None:
        """
        Setting a field replaces every field of its name, and comes after the
        others.
        """
        edits = HeaderEdits.from_config([], [("X-Env", "prod")])
        headers = ((b"x-env", b"a"), (b"A", b"1"), (b"X-ENV", b"b"))
        self.assertEqual(edits.apply(headers), ((b"A", b"1"), (b"X-Env", b"prod")))

    def test_set_adds(self) -> None:
        """
        Setting a field no message has adds it.
        """
        edits = HeaderEdits.from_config([], [("X-Env", "prod"), ("X-Other", "1")])
        self.assertEqual(
            edits.apply(((b"A", b"1"),)),
            ((b"A", b"1"), (b"X-Env", b"prod"), (b"X-Other", b"1")),
        )


class ForwardRequestHeadersTests(SynchronousTestCase):
    """
    Tests for L{forward_request_headers}.
    """

    def test_plain_request(self) -> None:
        """
        A request with no hop-by-hop fields keeps its fields in order, C{Host}
        unchanged, and gets the forwarding fields after them.
        """
        head = request(((b"Accept", b"*/*"), (b"Content-Length", b"5"), (b"Cookie", b"a=1")))
        self.assertEqual(
            forwarded(head),
            (
                (b"Host", b"a.example"),
                (b"Accept", b"*/*"),
                (b"Content-Length", b"5"),
                (b"Cookie", b"a=1"),
                *ADDED,
            ),
        )

    def test_hop_by_hop_removed(self) -> None:
        """
        Each hop-by-hop field is removed, whatever the case of its name.
        """
        for name in sorted(HOP_BY_HOP):
            for sent in (name, name.upper(), name.title()):
                head = request(((sent, b"x"), (b"Accept", b"*/*")))
                self.assertEqual(
                    forwarded(head), ((b"Host", b"a.example"), (b"Accept", b"*/*"), *ADDED), sent
                )

    def test_transfer_encoding_removed(self) -> None:
        """
        C{Transfer-Encoding} is removed and C{TE} with it; the writer frames a
        chunked body itself.
        """
        head = request(((b"Transfer-Encoding", b"chunked"), (b"TE", b"trailers")))
        self.assertEqual(forwarded(head), ((b"Host", b"a.example"), *ADDED))

    def test_connection_named_fields_removed(self) -> None:
        """
        The fields that C{Connection} names are removed, before or after it,
        from one or several C{Connection} fields.
        """
        head = request(
            (
                (b"X-Before", b"1"),
                (b"Connection", b"keep-alive, X-Before"),
                (b"connection", b" x-after ,,close"),
                (b"x-AFTER", b"2"),
                (b"X-Kept", b"3"),
            )
        )
        self.assertEqual(forwarded(head), ((b"Host", b"a.example"), (b"X-Kept", b"3"), *ADDED))

    def test_connection_cannot_remove_framing_or_host(self) -> None:
        """
        C{Connection} naming C{Host} or C{Content-Length} removes neither:
        the request's route and framing stay as txproxy read them.
        """
        head = request(((b"Connection", b"host, content-length"), (b"Content-Length", b"5")))
        self.assertEqual(
            forwarded(head), ((b"Host", b"a.example"), (b"Content-Length", b"5"), *ADDED)
        )

    def test_connection_named_forwarded_for(self) -> None:
        """
        A client that names C{X-Forwarded-For} in C{Connection} loses its own
        value, and still gets its address appended.
        """
        head = request(((b"Connection", b"X-Forwarded-For"), (b"X-Forwarded-For", b"10.9.9.9")))
        self.assertEqual(forwarded(head), ((b"Host", b"a.example"), *ADDED))

    def test_upgrade_kept(self) -> None:
        """
        A request to switch protocols keeps C{Upgrade} and is sent with
        C{Connection: Upgrade}; the other options of C{Connection} still go.
        """
        head = request(
            (
                (b"Connection", b"keep-alive, Upgrade, X-Hop"),
                (b"Upgrade", b"websocket"),
                (b"X-Hop", b"1"),
                (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            ),
            upgrade=True,
        )
        self.assertEqual(
            forwarded(head),
            (
                (b"Host", b"a.example"),
                (b"Upgrade", b"websocket"),
                (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                (b"Connection", b"Upgrade"),
                *ADDED,
            ),
        )

    def test_upgrade_removed_without_upgrade(self) -> None:
        """
        An C{Upgrade} field on a request that does not switch protocols is
        removed.
        """
        head = request(((b"Connection", b"Upgrade"), (b"Upgrade", b"h2c")))
        self.assertEqual(forwarded(head), ((b"Host", b"a.example"), *ADDED))

    def test_forwarded_for_appended(self) -> None:
        """
        The client's address is appended to the C{X-Forwarded-For} it sent.
        """
        head = request(((b"X-Forwarded-For", b"203.0.113.1"), (b"Accept", b"*/*")))
        self.assertEqual(
            forwarded(head),
            (
                (b"Host", b"a.example"),
                (b"Accept", b"*/*"),
                (b"X-Forwarded-For", b"203.0.113.1, 192.0.2.7"),
                *ADDED[1:],
            ),
        )

    def test_forwarded_for_combined(self) -> None:
        """
        Several C{X-Forwarded-For} fields become one, in order, the client's
        address last; empty ones are left out.
        """
        head = request(
            (
                (b"X-Forwarded-For", b"203.0.113.1, 203.0.113.2"),
                (b"x-forwarded-for", b""),
                (b"X-FORWARDED-FOR", b"203.0.113.3"),
            )
        )
        self.assertEqual(
            header_value(forwarded(head), b"x-forwarded-for"),
            b"203.0.113.1, 203.0.113.2, 203.0.113.3, 192.0.2.7",
        )
        self.assertEqual([name for name, _ in forwarded(head)].count(b"X-Forwarded-For"), 1)

    def test_forwarded_proto_and_host_replaced(self) -> None:
        """
        The C{X-Forwarded-Proto} and C{X-Forwarded-Host} a client sends are
        replaced by the scheme it spoke and the C{Host} it sent, port and all.
        """
        head = request(
            (
                (b"X-Forwarded-Proto", b"https"),
                (b"X-Forwarded-Host", b"evil.example"),
                (b"x-forwarded-host", b"evil2.example"),
            ),
            host=b"A.example:8443",
        )
        self.assertEqual(
            forward_request_headers(head, NO_EDITS, "2001:db8::1", b"https"),
            (
                (b"Host", b"A.example:8443"),
                (b"X-Forwarded-For", b"2001:db8::1"),
                (b"X-Forwarded-Proto", b"https"),
                (b"X-Forwarded-Host", b"A.example:8443"),
                (b"Via", b"1.1 txproxy"),
            ),
        )

    def test_no_host_no_forwarded_host(self) -> None:
        """
        An HTTP/1.0 request without C{Host} gets no C{X-Forwarded-Host}, and
        its C{Via} names HTTP/1.0, the version txproxy received.
        """
        head = RequestHead(b"GET", b"/", b"1.0", ((b"Accept", b"*/*"),))
        self.assertEqual(
            forwarded(head),
            (
                (b"Accept", b"*/*"),
                (b"X-Forwarded-For", b"192.0.2.7"),
                (b"X-Forwarded-Proto", b"http"),
                (b"Via", b"1.0 txproxy"),
            ),
        )

    def test_via_appended(self) -> None:
        """
        txproxy is appended to the C{Via} fields received, made one field.
        """
        head = request(((b"Via", b"1.1 cdn"), (b"via", b"1.0 edge")))
        self.assertEqual(forwarded(head)[-1], (b"Via", b"1.1 cdn, 1.0 edge, 1.1 txproxy"))

    def test_route_edits_last(self) -> None:
        """
        The route's edits apply last: they may replace C{Host}, replace a
        forwarding field, and remove a field.
        """
        edits = HeaderEdits.from_config(
            ["cookie", "X-Forwarded-Host"], [("Host", "backend.internal"), ("Via", "hidden")]
        )
        head = request(((b"Cookie", b"a=1"), (b"Accept", b"*/*")))
        self.assertEqual(
            forwarded(head, edits),
            (
                (b"Accept", b"*/*"),
                (b"X-Forwarded-For", b"192.0.2.7"),
                (b"X-Forwarded-Proto", b"http"),
                (b"Host", b"backend.internal"),
                (b"Via", b"hidden"),
            ),
        )


class ForwardResponseHeadersTests(SynchronousTestCase):
    """
    Tests for L{forward_response_headers}.
    """

    def test_hop_by_hop_removed(self) -> None:
        """
        Each hop-by-hop field and each field C{Connection} names is removed;
        C{Content-Length} and the others are kept in order.
        """
        headers = (
            (b"Content-Type", b"text/plain"),
            (b"Connection", b"keep-alive, X-Hop"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Trailer", b"X-Checksum"),
            (b"Proxy-Authenticate", b"Basic"),
            (b"Upgrade", b"h2c"),
            (b"X-Hop", b"1"),
            (b"Content-Length", b"5"),
        )
        self.assertEqual(
            forward_response_headers(response(headers), NO_EDITS, False),
            (
                (b"Content-Type", b"text/plain"),
                (b"Content-Length", b"5"),
                (b"Via", b"1.1 txproxy"),
            ),
        )

    def test_switching_protocols_keeps_upgrade(self) -> None:
        """
        A 101 response keeps C{Upgrade} and is sent with C{Connection: Upgrade}.
        """
        headers = (
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        )
        self.assertEqual(
            forward_response_headers(response(headers, 101), NO_EDITS, False),
            (
                (b"Upgrade", b"websocket"),
                (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                (b"Connection", b"Upgrade"),
                (b"Via", b"1.1 txproxy"),
            ),
        )

    def test_hidden_headers_removed(self) -> None:
        """
        The fields naming the server's software are removed, whatever their case.
        """
        for name in sorted(HIDDEN_RESPONSE_HEADERS):
            headers = ((name.upper(), b"nginx/1.25.3"), (b"Content-Length", b"0"))
            self.assertEqual(
                forward_response_headers(response(headers), NO_EDITS, False),
                ((b"Content-Length", b"0"), (b"Via", b"1.1 txproxy")),
                name,
            )

    def test_hidden_headers_kept_when_asked(self) -> None:
        """
        With C{keep_server_headers}, C{Server} and C{X-Powered-By} are kept.
        """
        headers = ((b"Server", b"nginx"), (b"X-Powered-By", b"PHP/8.3"))
        self.assertEqual(
            forward_response_headers(response(headers), NO_EDITS, True),
            (*headers, (b"Via", b"1.1 txproxy")),
        )

    def test_via_appended(self) -> None:
        """
        txproxy is appended to a received C{Via}, naming the version the
        response came in.
        """
        head = response(((b"Via", b"1.1 varnish"),), version=b"1.0")
        self.assertEqual(
            forward_response_headers(head, NO_EDITS, False),
            ((b"Via", b"1.1 varnish, 1.0 txproxy"),),
        )

    def test_route_edits(self) -> None:
        """
        The route's response edits apply last: set replaces, remove removes.
        """
        edits = HeaderEdits.from_config(["x-internal"], [("Cache-Control", "no-cache")])
        headers = (
            (b"Cache-Control", b"max-age=60"),
            (b"X-Internal", b"1"),
            (b"ETag", b'"a"'),
        )
        self.assertEqual(
            forward_response_headers(response(headers), edits, False),
            ((b"ETag", b'"a"'), (b"Via", b"1.1 txproxy"), (b"Cache-Control", b"no-cache")),
        )
