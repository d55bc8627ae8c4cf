"""
Tests for L{txproxy.http.parsing}: request and response readers, framing and strictness.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import overload

from twisted.trial.unittest import SynchronousTestCase

from txproxy.http.events import (
    BadMessage,
    BodyChunk,
    EndOfMessage,
    RequestEvent,
    RequestHead,
    ResponseEvent,
    ResponseHead,
)
from txproxy.http.parsing import RequestReader, ResponseReader

GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


@overload
def feed_bytewise(reader: RequestReader, data: bytes) -> list[RequestEvent]: ...


@overload
def feed_bytewise(reader: ResponseReader, data: bytes) -> list[ResponseEvent]: ...


def feed_bytewise(
    reader: RequestReader | ResponseReader, data: bytes
) -> list[RequestEvent] | list[ResponseEvent]:
    """
    Feed C{data} to C{reader} one byte at a time and return all the events.
    """
    if isinstance(reader, RequestReader):
        requests: list[RequestEvent] = []
        for index in range(len(data)):
            requests.extend(reader.feed(data[index : index + 1]))
        return requests
    responses: list[ResponseEvent] = []
    for index in range(len(data)):
        responses.extend(reader.feed(data[index : index + 1]))
    return responses


def body_of(events: list[RequestEvent] | list[ResponseEvent]) -> bytes:
    """
    The body bytes in C{events}, joined.
    """
    return b"".join(event.data for event in events if isinstance(event, BodyChunk))


def without_body(
    events: list[RequestEvent] | list[ResponseEvent],
) -> list[RequestEvent | ResponseEvent]:
    """
    C{events} less their L{BodyChunk}s.
    """
    return [event for event in events if not isinstance(event, BodyChunk)]


class RequestReaderTests(SynchronousTestCase):
    """
    Tests for L{RequestReader} on well-formed requests.
    """

    def test_in_head(self) -> None:
        """
        L{RequestReader.in_head} is true only while part of a head has come.
        """
        reader = RequestReader()
        self.assertFalse(reader.in_head)
        reader.feed(b"GET / HT")
        self.assertTrue(reader.in_head)
        reader.feed(b"TP/1.1\r\nHost: a\r\n\r\n")
        self.assertFalse(reader.in_head)

    def test_simple_get(self) -> None:
        """
        A GET gives its head, with the fields parsed, and the end of the message.
        """
        reader = RequestReader()
        events = reader.feed(b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n")
        self.assertEqual(
            events,
            [
                RequestHead(
                    method=b"GET",
                    target=b"/a?b=1",
                    version=b"1.1",
                    headers=((b"Host", b"example.com"), (b"Accept", b"*/*")),
                    host=b"example.com",
                ),
                EndOfMessage(),
            ],
        )

    def test_header_names_as_sent_values_stripped(self) -> None:
        """
        Header names keep their case and order, repeats stay separate, and values
        lose the whitespace around them.
        """
        reader = RequestReader()
        [head, end] = reader.feed(
            b"GET / HTTP/1.1\r\nhOsT: a\r\nX-Tag:  one \t\r\nx-tag:\ttwo\r\nEmpty:\r\n\r\n"
        )
        assert isinstance(head, RequestHead)
        self.assertEqual(
            head.headers,
            ((b"hOsT", b"a"), (b"X-Tag", b"one"), (b"x-tag", b"two"), (b"Empty", b"")),
        )
        self.assertEqual(head.host, b"a")

    def test_content_length_body_byte_at_a_time(self) -> None:
        """
        A body framed by Content-Length, fed a byte at a time, comes out whole
        across its L{BodyChunk}s, then the next request follows.
        """
        reader = RequestReader()
        events = feed_bytewise(
            reader,
            b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world" + GET,
        )
        self.assertEqual(body_of(events), b"hello world")
        [head, end, second, second_end] = without_body(events)
        assert isinstance(head, RequestHead)
        self.assertEqual((head.method, head.content_length, head.chunked), (b"POST", 11, False))
        self.assertTrue(head.has_body)
        self.assertEqual(end, EndOfMessage())
        assert isinstance(second, RequestHead)
        self.assertEqual(second.method, b"GET")
        self.assertEqual(second_end, EndOfMessage())

    def test_content_length_body_across_feeds(self) -> None:
        """
        A body split over feeds gives one L{BodyChunk} per piece, and the end of the
        message only once all of it came.
        """
        reader = RequestReader()
        events = reader.feed(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nabc")
        self.assertEqual(events[1:], [BodyChunk(b"abc")])
        self.assertEqual(reader.feed(b"de"), [BodyChunk(b"de")])
        self.assertEqual(reader.feed(b"f"), [BodyChunk(b"f"), EndOfMessage()])

    def test_content_length_zero(self) -> None:
        """
        C{Content-Length: 0} gives the head and the end, with no body.
        """
        reader = RequestReader()
        [head, end] = reader.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        assert isinstance(head, RequestHead)
        self.assertEqual(head.content_length, 0)
        self.assertFalse(head.has_body)
        self.assertEqual(end, EndOfMessage())

    def test_chunked_body_with_trailers(self) -> None:
        """
        A chunked body comes out without its framing or extensions, and its
        trailers come with the end of the message.
        """
        reader = RequestReader()
        events = reader.feed(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\n"
            b"Checksum: abc \r\nX-Done: yes\r\n\r\n"
        )
        head = events[0]
        assert isinstance(head, RequestHead)
        self.assertEqual((head.chunked, head.content_length), (True, None))
        self.assertEqual(body_of(events), b"hello world")
        self.assertEqual(events[-1], EndOfMessage(((b"Checksum", b"abc"), (b"X-Done", b"yes"))))

    def test_chunked_body_byte_at_a_time(self) -> None:
        """
        A chunked body fed a byte at a time gives the same body and trailers.
        """
        reader = RequestReader()
        events = feed_bytewise(
            reader,
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
            b"a\r\n0123456789\r\n0\r\nT: 1\r\n\r\n" + GET,
        )
        self.assertEqual(body_of(events), b"0123456789")
        [head, end, second, second_end] = without_body(events)
        self.assertEqual(end, EndOfMessage(((b"T", b"1"),)))
        assert isinstance(second, RequestHead)
        self.assertEqual(second_end, EndOfMessage())

    def test_pipelined_requests_in_one_feed(self) -> None:
        """
        Requests pipelined in one feed give their events in order.
        """
        reader = RequestReader()
        events = reader.feed(
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok"
            b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual(
            [type(event) for event in events],
            [RequestHead, EndOfMessage, RequestHead, BodyChunk, EndOfMessage]
            + [RequestHead, EndOfMessage],
        )
        targets = [event.target for event in events if isinstance(event, RequestHead)]
        self.assertEqual(targets, [b"/1", b"/2", b"/3"])

    def test_leading_empty_lines_ignored(self) -> None:
        """
        Empty lines before a request line are ignored (RFC 9112 2.2).
        """
        reader = RequestReader()
        self.assertEqual(reader.feed(b"\r\n"), [])
        [head, end] = reader.feed(GET)
        self.assertIsInstance(head, RequestHead)

    def test_http11_keeps_alive(self) -> None:
        """
        An HTTP/1.1 request keeps the connection by default.
        """
        [head, _] = RequestReader().feed(GET)
        assert isinstance(head, RequestHead)
        self.assertEqual((head.version, head.keep_alive), (b"1.1", True))

    def test_http10_closes(self) -> None:
        """
        An HTTP/1.0 request without keep-alive ends the connection, and needs no Host.
        """
        [head, _] = RequestReader().feed(b"GET / HTTP/1.0\r\n\r\n")
        assert isinstance(head, RequestHead)
        self.assertEqual((head.version, head.keep_alive, head.host), (b"1.0", False, None))

    def test_http10_keep_alive(self) -> None:
        """
        An HTTP/1.0 request with C{Connection: keep-alive} keeps the connection.
        """
        [head, _] = RequestReader().feed(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        assert isinstance(head, RequestHead)
        self.assertTrue(head.keep_alive)

    def test_http11_connection_close(self) -> None:
        """
        An HTTP/1.1 request with C{Connection: close} ends the connection, and
        bytes after it are not read (RFC 9112 9.6).
        """
        reader = RequestReader()
        events = reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + GET)
        [head, end] = events
        assert isinstance(head, RequestHead)
        self.assertFalse(head.keep_alive)
        self.assertEqual(end, EndOfMessage())
        self.assertEqual(reader.feed(GET), [])
        self.assertEqual(reader.feed_eof(), [])

    def test_expect_continue(self) -> None:
        """
        C{Expect: 100-continue}, in any case, sets C{expect_continue}.
        """
        [head] = RequestReader().feed(
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n"
        )
        assert isinstance(head, RequestHead)
        self.assertTrue(head.expect_continue)
        [head, _] = RequestReader().feed(GET)
        assert isinstance(head, RequestHead)
        self.assertFalse(head.expect_continue)

    def test_expect_continue_ignored_in_http10(self) -> None:
        """
        C{Expect: 100-continue} in an HTTP/1.0 request is ignored (RFC 9110 10.1.1).
        """
        [head, _] = RequestReader().feed(b"GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")
        assert isinstance(head, RequestHead)
        self.assertFalse(head.expect_continue)

    def test_absolute_form(self) -> None:
        """
        An absolute-form target becomes origin-form, and its authority overrides
        the Host field (RFC 9112 3.2.2).
        """
        [head, _] = RequestReader().feed(
            b"GET http://example.com:8080/a?b HTTP/1.1\r\nHost: other\r\n\r\n"
        )
        assert isinstance(head, RequestHead)
        self.assertEqual((head.target, head.host), (b"/a?b", b"example.com:8080"))
        self.assertEqual(head.headers, ((b"Host", b"other"),))

    def test_absolute_form_empty_path(self) -> None:
        """
        An absolute-form target with an empty path gets C{/} (RFC 9112 3.2.1).
        """
        [head, _] = RequestReader().feed(b"GET HTTPS://Example.com HTTP/1.1\r\nHost: x\r\n\r\n")
        assert isinstance(head, RequestHead)
        self.assertEqual((head.target, head.host), (b"/", b"Example.com"))
        [head, _] = RequestReader().feed(b"GET http://[::1]:80?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert isinstance(head, RequestHead)
        self.assertEqual((head.target, head.host), (b"/?q=1", b"[::1]:80"))

    def test_asterisk_form_options(self) -> None:
        """
        C{OPTIONS *} is read as is.
        """
        [head, _] = RequestReader().feed(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
        assert isinstance(head, RequestHead)
        self.assertEqual((head.method, head.target), (b"OPTIONS", b"*"))

    def test_upgrade_then_detach(self) -> None:
        """
        An Upgrade request gives its head and end, then the bytes after it, in that
        feed and later ones, are kept raw for L{RequestReader.detach}.
        """
        reader = RequestReader()
        events = reader.feed(
            b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n\x81\x05hello"
        )
        [head, end] = events
        assert isinstance(head, RequestHead)
        self.assertTrue(head.upgrade)
        self.assertEqual(end, EndOfMessage())
        self.assertEqual(reader.feed(GET), [])
        self.assertEqual(reader.feed_eof(), [])
        self.assertEqual(reader.detach(), b"\x81\x05hello" + GET)
        self.assertRaises(RuntimeError, reader.feed, b"more")
        self.assertRaises(RuntimeError, reader.detach)

    def test_upgrade_with_body(self) -> None:
        """
        The Content-Length body of an Upgrade request comes before its end, even
        split across feeds; the bytes after it are kept raw.
        """
        reader = RequestReader()
        events = reader.feed(
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
            b"Content-Length: 5\r\n\r\nhel"
        )
        [head, body] = events
        assert isinstance(head, RequestHead)
        self.assertTrue(head.upgrade)
        self.assertEqual(body, BodyChunk(b"hel"))
        self.assertEqual(reader.feed(b"loRAW"), [BodyChunk(b"lo"), EndOfMessage()])
        self.assertEqual(reader.detach(), b"RAW")

    def test_upgrade_truncated_body(self) -> None:
        """
        The end of the connection inside the body of an Upgrade request is a truncation.
        """
        reader = RequestReader()
        reader.feed(
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
            b"Content-Length: 5\r\n\r\nhel"
        )
        self.assertEqual(reader.feed_eof(), [BadMessage("truncated request body")])

    def test_upgrade_ignored_in_http10(self) -> None:
        """
        An Upgrade in an HTTP/1.0 request is ignored (RFC 9110 7.8): its body is
        read and the next request follows.
        """
        reader = RequestReader()
        events = reader.feed(
            b"POST / HTTP/1.0\r\nConnection: keep-alive, upgrade\r\nUpgrade: websocket\r\n"
            b"Content-Length: 2\r\n\r\nok" + GET
        )
        [head, body, end, second, second_end] = events
        assert isinstance(head, RequestHead)
        self.assertFalse(head.upgrade)
        self.assertEqual((body, end), (BodyChunk(b"ok"), EndOfMessage()))
        assert isinstance(second, RequestHead)
        self.assertEqual(second.version, b"1.1")
        self.assertRaises(RuntimeError, reader.detach)

    def test_detach_without_upgrade(self) -> None:
        """
        L{RequestReader.detach} raises unless a request switched protocols.
        """
        reader = RequestReader()
        reader.feed(GET)
        self.assertRaises(RuntimeError, reader.detach)

    def test_eof_between_requests(self) -> None:
        """
        The end of the connection between requests gives nothing.
        """
        reader = RequestReader()
        reader.feed(GET)
        self.assertEqual(reader.feed_eof(), [])
        self.assertEqual(RequestReader().feed_eof(), [])

    def test_eof_in_head(self) -> None:
        """
        The end of the connection inside a head is a truncation.
        """
        reader = RequestReader()
        self.assertEqual(reader.feed(b"GET / HTTP/1.1\r\nHost: a\r\n"), [])
        self.assertEqual(reader.feed_eof(), [BadMessage("truncated request head")])
        self.assertEqual(reader.feed(GET), [])

    def test_eof_in_body(self) -> None:
        """
        The end of the connection inside a Content-Length or chunked body is a truncation.
        """
        reader = RequestReader()
        reader.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
        self.assertEqual(reader.feed_eof(), [BadMessage("truncated request body")])
        reader = RequestReader()
        reader.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n")
        self.assertEqual(reader.feed_eof(), [BadMessage("truncated request body")])

    def test_large_body_before_small_head(self) -> None:
        """
        A feed holding a large body and the start of the next head does not count
        the body against the head limit.
        """
        reader = RequestReader(max_header_size=1024)
        events = reader.feed(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4000\r\n\r\n"
            + b"x" * 4000
            + b"GET / HTTP/1.1\r\nHost: a\r\n"
        )
        self.assertEqual(body_of(events), b"x" * 4000)
        self.assertEqual(reader.feed(b"\r\n")[-1], EndOfMessage())

    def test_no_limits(self) -> None:
        """
        Limits of 0 take heads of any size.
        """
        reader = RequestReader(max_header_size=0, max_headers=0, max_target=0)
        fields = b"".join(b"X-%d: %s\r\n" % (index, b"v" * 100) for index in range(500))
        events = reader.feed(
            b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n"
        )
        [head, _] = events
        assert isinstance(head, RequestHead)
        self.assertEqual(len(head.headers), 501)


class RequestReaderStrictnessTests(SynchronousTestCase):
    """
    Tests for L{RequestReader} on requests it must refuse: each gives one
    L{BadMessage} and nothing after it, and ambiguous heads are never given.
    """

    def assert_rejected(
        self,
        data: bytes,
        status: int = 400,
        reader: RequestReader | None = None,
        bytewise: bool = False,
    ) -> BadMessage:
        """
        Assert that C{data} gives a L{BadMessage} with C{status} and nothing else
        (no part of the bad request is given), and nothing after it, ever.
        """
        if reader is None:
            reader = RequestReader()
        events = feed_bytewise(reader, data) if bytewise else reader.feed(data)
        [failure] = events
        assert isinstance(failure, BadMessage), events
        self.assertEqual(failure.status, status, failure)
        self.assertEqual(reader.feed(GET), [])
        self.assertEqual(reader.feed_eof(), [])
        self.assertEqual(reader.feed(GET), [])
        return failure

    def test_content_length_with_transfer_encoding(self) -> None:
        """
        Content-Length with Transfer-Encoding is refused (RFC 9112 6.3).
        """
        self.assert_rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        self.assert_rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 5\r\n\r\n0\r\n\r\n"
        )

    def test_identical_content_lengths(self) -> None:
        """
        Two identical Content-Length fields are refused too, as llhttp does.
        """
        self.assert_rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
        )

    def test_differing_content_lengths(self) -> None:
        """
        Two Content-Length fields that differ are refused.
        """
        self.assert_rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
        )

    def test_content_length_list(self) -> None:
        """
        A Content-Length holding a list of values is refused.
        """
        self.assert_rejected(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc")

    def test_content_length_not_decimal(self) -> None:
        """
        A Content-Length that is not a plain decimal is refused.
        """
        for value in [b"+3", b"-3", b"0x3", b"3.0", b"3 3", b"", b"three", b"9" * 30]:
            self.assert_rejected(
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + value + b"\r\n\r\nabc"
            )

    def test_transfer_encoding_chunked_twice(self) -> None:
        """
        C{chunked} applied twice, in one field or two, is refused.
        """
        self.assert_rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"
        )
        self.assert_rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )

    def test_transfer_encoding_other_coding_then_chunked(self) -> None:
        """
        A coding before C{chunked}, in one field or two, is refused: a proxy takes
        C{chunked} alone.
        """
        self.assert_rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
        )
        self.assert_rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )

    def test_transfer_encoding_not_chunked(self) -> None:
        """
        A Transfer-Encoding whose final coding is not C{chunked} is refused (RFC 9112 6.3).
        """
        for coding in [b"identity", b"gzip", b"chunked, gzip", b"chunkedx", b""]:
            self.assert_rejected(
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: " + coding + b"\r\n\r\nabc"
            )

    def test_transfer_encoding_in_http10(self) -> None:
        """
        Transfer-Encoding in an HTTP/1.0 request is faulty framing (RFC 9112 6.1).
        """
        self.assert_rejected(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")

    def test_invalid_chunk_size(self) -> None:
        """
        A chunk size that is not hexadecimal, has whitespace, or overflows is refused.
        """
        head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        for size in [b"zz", b"-5", b"5 ", b" 5", b"0x5", b"", b"f" * 20]:
            self.assert_rejected(head + size + b"\r\nhello\r\n0\r\n\r\n")

    def test_chunk_extension_garbage(self) -> None:
        """
        A chunk extension that is not C{;name[=value]} is refused.
        """
        head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        for extension in [b";\x01", b"; =x", b";a=\x7f", b';a="b']:
            self.assert_rejected(
                head + b"5" + extension + b"\r\nhello\r\n0\r\n\r\n",
            )

    def test_chunk_without_crlf(self) -> None:
        """
        Chunk data not followed by CRLF is refused.
        """
        self.assert_rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhelloXX0\r\n\r\n",
        )

    def test_obs_fold(self) -> None:
        """
        A header line starting with SP or HTAB (obs-fold) is refused (RFC 9112 5.2).
        """
        self.assert_rejected(b"GET / HTTP/1.1\r\nHost: a\r\nX: one\r\n two\r\n\r\n")
        self.assert_rejected(b"GET / HTTP/1.1\r\nHost: a\r\nX: one\r\n\ttwo\r\n\r\n")
        self.assert_rejected(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n")

    def test_obs_fold_in_trailers(self) -> None:
        """
        obs-fold in a trailer section is refused as well.
        """
        self.assert_rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\nT: 1\r\n 2\r\n\r\n",
        )

    def test_bare_cr(self) -> None:
        """
        A CR not followed by LF anywhere in the head is refused (RFC 9112 2.2).
        """
        for data in [
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
            b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
        ]:
            self.assert_rejected(data)

    def test_bare_lf(self) -> None:
        """
        A line ending in LF alone is refused.
        """
        self.assert_rejected(b"GET / HTTP/1.1\nHost: a\n\n")
        self.assert_rejected(b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n")

    def test_whitespace_before_colon(self) -> None:
        """
        Whitespace between a field name and the colon is refused (RFC 9112 5.1).
        """
        self.assert_rejected(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n")
        self.assert_rejected(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length\t: 0\r\n\r\n")

    def test_invalid_field_name(self) -> None:
        """
        A field name with a character outside token, or none at all, is refused.
        """
        for name in [b"X(", b"X/Y", b"X\x00", b"\xff", b"X@", b""]:
            self.assert_rejected(b"GET / HTTP/1.1\r\nHost: a\r\n" + name + b": v\r\n\r\n")

    def test_invalid_field_value(self) -> None:
        """
        NUL, CR, LF and other controls in a field value are refused.
        """
        for value in [b"a\x00b", b"a\rb", b"a\nb", b"a\x7fb", b"a\x01b"]:
            self.assert_rejected(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + value + b"\r\n\r\n")

    def test_missing_host(self) -> None:
        """
        An HTTP/1.1 request without Host is refused (RFC 9112 3.2).
        """
        self.assert_rejected(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n")

    def test_several_hosts(self) -> None:
        """
        More than one Host field is refused (RFC 9112 3.2), whatever the version.
        """
        self.assert_rejected(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n")
        self.assert_rejected(b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n")

    def test_invalid_host(self) -> None:
        """
        A Host that is not C{host[:port]} is refused (RFC 9112 3.2).
        """
        for host in [b"a b", b"a/b", b"a@b", b"a:b", b"[::1", b'a"b']:
            self.assert_rejected(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")

    def test_unsupported_version(self) -> None:
        """
        HTTP versions other than 1.0 and 1.1 are refused.
        """
        for version in [b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.2", b"HTTP/3.0", b"http/1.1"]:
            self.assert_rejected(b"GET / " + version + b"\r\nHost: a\r\n\r\n")

    def test_invalid_method(self) -> None:
        """
        A method that is not a token, or not a method llhttp knows, is refused.
        """
        for method in [b"G(T", b"GE T", b"get", b"FOO", b"SETUP", b""]:
            self.assert_rejected(method + b" / HTTP/1.1\r\nHost: a\r\n\r\n")

    def test_connect(self) -> None:
        """
        CONNECT is refused with 405.
        """
        failure = self.assert_rejected(
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405
        )
        self.assertEqual(failure.reason, "CONNECT is not supported")

    def test_asterisk_outside_options(self) -> None:
        """
        The asterisk-form target is refused for methods other than OPTIONS (RFC 9112 3.2.4).
        """
        self.assert_rejected(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assert_rejected(b"OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n")

    def test_invalid_absolute_form(self) -> None:
        """
        Absolute-form targets with userinfo, no host, or a scheme other than http
        and https are refused.
        """
        for target in [
            b"http://user@example.com/",
            b"http:///a",
            b"http://:80/a",
            b"ftp://example.com/a",
            b"http://exa mple.com/",
        ]:
            self.assert_rejected(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")

    def test_fragment_in_target(self) -> None:
        """
        A request-target with a fragment is refused.
        """
        self.assert_rejected(b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n")

    def test_invalid_target_characters(self) -> None:
        """
        Controls and non-ASCII bytes in the request-target are refused.
        """
        for target in [b"/a\x01", b"/a\x7f", b"/\xff", b"a"]:
            self.assert_rejected(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")

    def test_upgrade_with_chunked_body(self) -> None:
        """
        An Upgrade request with a chunked body is refused: llhttp cannot read it.
        """
        self.assert_rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )

    def test_target_too_long(self) -> None:
        """
        A request-target longer than C{max_target} is refused with 414.
        """
        reader = RequestReader(max_target=100)
        self.assert_rejected(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, reader)
        reader = RequestReader(max_target=100)
        [head, _] = reader.feed(b"GET /" + b"a" * 99 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        assert isinstance(head, RequestHead)

    def test_target_too_long_byte_at_a_time(self) -> None:
        """
        A request-target sent a byte at a time is refused with 414 once it passes
        C{max_target}, before its end.
        """
        reader = RequestReader(max_target=100)
        events = feed_bytewise(reader, b"GET /" + b"a" * 100)
        self.assertEqual(events, [BadMessage("request-target too long", 414)])
        self.assertEqual(reader.feed(b" HTTP/1.1\r\nHost: a\r\n\r\n"), [])

    def test_header_section_too_large(self) -> None:
        """
        A head larger than C{max_header_size} is refused with 431; a head just
        under it is read.
        """
        reader = RequestReader(max_header_size=1024)
        self.assert_rejected(GET[:-2] + b"X: " + b"v" * 1024 + b"\r\n\r\n", 431, reader)
        filler = b"X: " + b"v" * (1024 - len(GET) - 5) + b"\r\n"
        head = GET[:-2] + filler + b"\r\n"
        self.assertEqual(len(head), 1024)
        [event, _] = RequestReader(max_header_size=1024).feed(head)
        self.assertIsInstance(event, RequestHead)
        self.assert_rejected(GET[:-2] + b"Y: 1\r\n" + filler + b"\r\n", 431, RequestReader(1024))

    def test_too_many_headers(self) -> None:
        """
        More than C{max_headers} fields are refused with 431.
        """
        fields = b"".join(b"X-%d: v\r\n" % (index,) for index in range(10))
        reader = RequestReader(max_headers=10)
        self.assert_rejected(GET[:-2] + fields + b"\r\n", 431, reader)
        [head, _] = RequestReader(max_headers=11).feed(GET[:-2] + fields + b"\r\n")
        self.assertIsInstance(head, RequestHead)

    def test_slowloris_header_section(self) -> None:
        """
        A head sent a byte at a time is refused with 431 as soon as it passes
        C{max_header_size}, not when it ends.
        """
        reader = RequestReader(max_header_size=1024)
        data = GET[:-2] + b"".join(b"X-%d: vvvvvvvvvv\r\n" % (index,) for index in range(200))
        fed = 0
        events: list[RequestEvent] = []
        while not events:
            events = reader.feed(data[fed : fed + 1])
            fed += 1
        self.assertEqual(events, [BadMessage("header section too large", 431)])
        self.assertEqual(fed, 1025)
        self.assertEqual(reader.feed(data[fed:]), [])

    def test_slowloris_one_field_value(self) -> None:
        """
        One endless field value sent a byte at a time is refused with 431 once the
        head passes C{max_header_size}.
        """
        reader = RequestReader(max_header_size=1024)
        events = feed_bytewise(reader, GET[:-2] + b"X: " + b"v" * 2000)
        self.assertEqual(events, [BadMessage("header section too large", 431)])

    def test_slowloris_many_fields(self) -> None:
        """
        Fields sent one per feed are refused with 431 past C{max_headers}, without
        limit on size.
        """
        reader = RequestReader(max_header_size=0, max_headers=10)
        reader.feed(GET[:-2])
        events: list[RequestEvent] = []
        fed = 0
        while not events:
            events = reader.feed(b"X-%d: v\r\n" % (fed,))
            fed += 1
        self.assertEqual(events, [BadMessage("too many header fields", 431)])
        # llhttp gives a field once the next one starts.
        self.assertEqual(fed, 11)

    def test_slowloris_after_pipelined_request(self) -> None:
        """
        A head started in the feed that ended the previous request still counts
        towards the limit in later feeds.
        """
        reader = RequestReader(max_header_size=1024)
        events = reader.feed(GET + GET[:-2] + b"X: ")
        self.assertEqual(len(events), 2)
        events = feed_bytewise(reader, b"v" * 1100)
        self.assertEqual(events, [BadMessage("header section too large", 431)])

    def test_slowloris_trailers(self) -> None:
        """
        An endless trailer section sent a byte at a time is refused with 431.
        """
        reader = RequestReader(max_header_size=1024)
        reader.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        reader.feed(b"3\r\nabc\r\n0\r\n")
        events = feed_bytewise(reader, b"T: " + b"v" * 2000)
        self.assertEqual(events, [BadMessage("trailer section too large", 431)])

    def test_too_many_trailers(self) -> None:
        """
        More than C{max_headers} trailer fields are refused with 431.
        """
        reader = RequestReader(max_headers=5)
        trailers = b"".join(b"T-%d: v\r\n" % (index,) for index in range(6))
        self.assert_rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
            + trailers
            + b"\r\n",
            431,
            reader,
        )

    def test_bad_chunk_after_head_given(self) -> None:
        """
        A bad chunk in a later feed than its head gives a L{BadMessage} after
        the head and body already given, and nothing after it.
        """
        reader = RequestReader()
        events = reader.feed(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        self.assertEqual([type(event) for event in events], [RequestHead, BodyChunk])
        self.assertEqual(
            reader.feed(b"2\r\nde\r\nzz\r\n"),
            [BadMessage("Invalid character in chunk size")],
        )
        self.assertEqual(reader.feed(b"0\r\n\r\n" + GET), [])
        self.assertEqual(reader.feed_eof(), [])

    def test_rejected_byte_at_a_time(self) -> None:
        """
        A bad request fed a byte at a time is refused just the same.
        """
        self.assert_rejected(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            bytewise=True,
        )
        self.assert_rejected(b"GET / HTTP/1.1\r\nX: 1\r\n\r\n", bytewise=True)

    def test_bad_request_after_good_one(self) -> None:
        """
        A bad request pipelined after a good one gives the good one's events, then
        the L{BadMessage}.
        """
        reader = RequestReader()
        events = reader.feed(GET + b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + GET)
        self.assertEqual([type(event) for event in events], [RequestHead, EndOfMessage, BadMessage])
        self.assertEqual(reader.feed(GET), [])


class ResponseReaderTests(SynchronousTestCase):
    """
    Tests for L{ResponseReader}.
    """

    def assert_rejected(self, data: bytes, method: bytes = b"GET") -> BadMessage:
        """
        Assert that C{data}, the response to C{method}, gives a L{BadMessage}
        with status 502 and nothing else, and nothing after it, ever.
        """
        reader = ResponseReader()
        reader.expect(method)
        [failure] = reader.feed(data)
        assert isinstance(failure, BadMessage), failure
        self.assertEqual(failure.status, 502)
        self.assertEqual(reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), [])
        self.assertEqual(reader.feed_eof(), [])
        return failure

    def test_content_length(self) -> None:
        """
        A body framed by Content-Length comes out, then the end of the response.
        """
        reader = ResponseReader()
        reader.expect(b"GET")
        events = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x \r\n\r\nhel")
        self.assertEqual(
            events,
            [
                ResponseHead(
                    status=200,
                    reason=b"OK",
                    version=b"1.1",
                    headers=((b"Content-Length", b"5"), (b"Server", b"x")),
                    content_length=5,
                ),
                BodyChunk(b"hel"),
            ],
        )
        self.assertEqual(reader.feed(b"lo"), [BodyChunk(b"lo"), EndOfMessage()])
        self.assertEqual(reader.feed_eof(), [])

    def test_content_length_byte_at_a_time(self) -> None:
        """
        A response fed a byte at a time gives the same head and body.
        """
        reader = ResponseReader()
        events = feed_bytewise(reader, b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nabc")
        [head, end] = without_body(events)
        assert isinstance(head, ResponseHead)
        self.assertEqual((head.status, head.reason, head.content_length), (404, b"Not Found", 3))
        self.assertEqual(body_of(events), b"abc")
        self.assertEqual(end, EndOfMessage())

    def test_chunked(self) -> None:
        """
        A chunked body comes out without its framing, its trailers with the end.
        """
        reader = ResponseReader()
        events = reader.feed(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n"
        )
        head = events[0]
        assert isinstance(head, ResponseHead)
        self.assertEqual((head.chunked, head.keep_alive, head.until_close), (True, True, False))
        self.assertEqual(body_of(events), b"abcde")
        self.assertEqual(events[-1], EndOfMessage(((b"T", b"1"),)))

    def test_until_close(self) -> None:
        """
        A response with neither Content-Length nor chunked has a body that ends when
        the server closes; it cannot keep the connection.
        """
        reader = ResponseReader()
        [head, body] = reader.feed(b"HTTP/1.1 200 OK\r\n\r\nabc")
        assert isinstance(head, ResponseHead)
        self.assertEqual((head.until_close, head.keep_alive), (True, False))
        self.assertEqual(body, BodyChunk(b"abc"))
        self.assertEqual(reader.feed(b"def"), [BodyChunk(b"def")])
        self.assertEqual(reader.feed_eof(), [EndOfMessage()])
        self.assertEqual(reader.feed_eof(), [])

    def test_http10(self) -> None:
        """
        An HTTP/1.0 response does not keep the connection unless it says keep-alive.
        """
        [head, _, _] = ResponseReader().feed(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx")
        assert isinstance(head, ResponseHead)
        self.assertEqual((head.version, head.keep_alive), (b"1.0", False))
        [head, _, _] = ResponseReader().feed(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx"
        )
        assert isinstance(head, ResponseHead)
        self.assertTrue(head.keep_alive)

    def test_connection_close(self) -> None:
        """
        A response with C{Connection: close} ends the connection; bytes after it are
        not read.
        """
        reader = ResponseReader()
        events = reader.feed(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nxjunk"
        )
        [head, body, end] = events
        assert isinstance(head, ResponseHead)
        self.assertFalse(head.keep_alive)
        self.assertEqual(reader.feed(b"more"), [])

    def test_head_with_content_length(self) -> None:
        """
        The response to HEAD has no body: its end follows the head, which keeps its
        Content-Length to be forwarded.
        """
        reader = ResponseReader()
        reader.expect(b"HEAD")
        [head, end] = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        assert isinstance(head, ResponseHead)
        self.assertEqual((head.content_length, head.keep_alive), (5, True))
        self.assertEqual(end, EndOfMessage())
        self.assertEqual(reader.feed_eof(), [])

    def test_head_with_chunked(self) -> None:
        """
        The response to HEAD saying chunked has no body either.
        """
        reader = ResponseReader()
        reader.expect(b"HEAD")
        [head, end] = reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert isinstance(head, ResponseHead)
        self.assertEqual((head.chunked, head.keep_alive, head.until_close), (True, True, False))
        self.assertEqual(end, EndOfMessage())

    def test_head_without_framing(self) -> None:
        """
        The response to HEAD without framing fields has no body and keeps the
        connection.
        """
        reader = ResponseReader()
        reader.expect(b"HEAD")
        [head, end] = reader.feed(b"HTTP/1.1 200 OK\r\n\r\n")
        assert isinstance(head, ResponseHead)
        self.assertEqual((head.until_close, head.keep_alive), (False, True))

    def test_head_byte_at_a_time(self) -> None:
        """
        The response to HEAD fed a byte at a time ends after its head, keeps the
        connection, and the next response is read.
        """
        reader = ResponseReader()
        reader.expect(b"HEAD")
        [head, end] = feed_bytewise(reader, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
        assert isinstance(head, ResponseHead)
        self.assertTrue(head.keep_alive)
        reader.expect(b"GET")
        events = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(body_of(events), b"hello")

    def test_head_end_across_feeds(self) -> None:
        """
        The response to HEAD whose final CRLF CRLF is split over feeds keeps the
        connection.
        """
        data = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        for split in range(len(data) - 4, len(data)):
            reader = ResponseReader()
            reader.expect(b"HEAD")
            self.assertEqual(reader.feed(data[:split]), [])
            [head, end] = reader.feed(data[split:])
            assert isinstance(head, ResponseHead)
            self.assertTrue(head.keep_alive, split)

    def test_bytes_after_bodiless_response(self) -> None:
        """
        Bytes after a response with no body mark it as not keeping the connection,
        and are not read.
        """
        for method, status in [(b"HEAD", b"200 OK"), (b"GET", b"204 No Content")]:
            reader = ResponseReader()
            reader.expect(method)
            [head, end] = reader.feed(b"HTTP/1.1 " + status + b"\r\nContent-Length: 5\r\n\r\nhello")
            assert isinstance(head, ResponseHead)
            self.assertFalse(head.keep_alive)
            self.assertEqual(end, EndOfMessage())
            self.assertEqual(reader.feed(b"HTTP/1.1 200 OK\r\n\r\n"), [])
            self.assertEqual(reader.feed_eof(), [])

    def test_204(self) -> None:
        """
        A 204 response has no body, even with a Content-Length.
        """
        reader = ResponseReader()
        [head, end] = reader.feed(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
        assert isinstance(head, ResponseHead)
        self.assertEqual((head.status, head.content_length, head.keep_alive), (204, 5, True))
        self.assertEqual(end, EndOfMessage())

    def test_304(self) -> None:
        """
        A 304 response has no body, even with a Content-Length.
        """
        reader = ResponseReader()
        reader.expect(b"GET")
        [head, end] = reader.feed(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n")
        assert isinstance(head, ResponseHead)
        self.assertEqual((head.status, head.content_length), (304, 1234))
        self.assertEqual(end, EndOfMessage())
        reader.expect(b"GET")
        [head, body, end] = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
        self.assertEqual(body, BodyChunk(b"x"))

    def test_continue_then_ok(self) -> None:
        """
        A 100 response gives its head alone; the final response follows.
        """
        reader = ResponseReader()
        reader.expect(b"POST")
        events = reader.feed(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        [interim, final, body, end] = events
        assert isinstance(interim, ResponseHead)
        self.assertEqual((interim.status, interim.reason), (100, b"Continue"))
        assert isinstance(final, ResponseHead)
        self.assertEqual(final.status, 200)
        self.assertEqual((body, end), (BodyChunk(b"ok"), EndOfMessage()))

    def test_continue_then_ok_across_feeds(self) -> None:
        """
        A 100 response and the final response in separate feeds give the same events.
        """
        reader = ResponseReader()
        reader.expect(b"POST")
        [interim] = reader.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert isinstance(interim, ResponseHead)
        self.assertEqual(interim.status, 100)
        events = reader.feed(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        [final, end] = events
        assert isinstance(final, ResponseHead)
        self.assertEqual(final.status, 201)

    def test_interims_then_head_response(self) -> None:
        """
        Interim responses before the response to HEAD, in one feed, leave it
        keeping the connection.
        """
        reader = ResponseReader()
        reader.expect(b"HEAD")
        events = reader.feed(
            b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        )
        [processing, hints, head, end] = events
        assert isinstance(hints, ResponseHead)
        self.assertEqual((hints.status, hints.headers), (103, ((b"Link", b"</a>"),)))
        assert isinstance(head, ResponseHead)
        self.assertEqual((head.status, head.keep_alive), (200, True))

    def test_switching_protocols(self) -> None:
        """
        A 101 response gives its head and end; the bytes after it, in that feed and
        later ones, are kept raw for L{ResponseReader.detach}.
        """
        reader = ResponseReader()
        reader.expect(b"GET")
        [head, end] = reader.feed(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n\x81\x02hi"
        )
        assert isinstance(head, ResponseHead)
        self.assertEqual((head.status, head.keep_alive), (101, False))
        self.assertEqual(end, EndOfMessage())
        self.assertEqual(reader.feed(b"more"), [])
        self.assertEqual(reader.detach(), b"\x81\x02himore")
        self.assertRaises(RuntimeError, reader.feed, b"x")

    def test_switching_protocols_without_upgrade(self) -> None:
        """
        A 101 response without an Upgrade field is refused (RFC 9110 15.2.2).
        """
        self.assert_rejected(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")

    def test_detach_without_switch(self) -> None:
        """
        L{ResponseReader.detach} raises unless a response switched protocols.
        """
        self.assertRaises(RuntimeError, ResponseReader().detach)

    def test_two_responses(self) -> None:
        """
        Two responses on one connection, with C{expect} called before each request,
        give their events in turn.
        """
        reader = ResponseReader()
        reader.expect(b"GET")
        first = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
        reader.expect(b"HEAD")
        second = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
        reader.expect(b"GET")
        third = reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        third += reader.feed(b"3\r\ntwo\r\n0\r\n\r\n")
        self.assertEqual(body_of(first), b"one")
        self.assertEqual(len(second), 2)
        self.assertEqual(body_of(third), b"two")
        self.assertEqual(third[-1], EndOfMessage())

    def test_eof_in_body(self) -> None:
        """
        The end of the connection inside a framed body is a truncation.
        """
        reader = ResponseReader()
        reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
        self.assertEqual(reader.feed_eof(), [BadMessage("truncated response body", 502)])
        reader = ResponseReader()
        reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab")
        self.assertEqual(reader.feed_eof(), [BadMessage("truncated response body", 502)])

    def test_eof_in_head(self) -> None:
        """
        The end of the connection inside a head is a truncation.
        """
        reader = ResponseReader()
        reader.feed(b"HTTP/1.1 200 OK\r\n")
        self.assertEqual(reader.feed_eof(), [BadMessage("truncated response head", 502)])

    def test_eof_between_responses(self) -> None:
        """
        The end of the connection between responses gives nothing.
        """
        reader = ResponseReader()
        reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(reader.feed_eof(), [])

    def test_content_length_with_transfer_encoding(self) -> None:
        """
        Content-Length with Transfer-Encoding is refused.
        """
        self.assert_rejected(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        )

    def test_differing_content_lengths(self) -> None:
        """
        Two Content-Length fields are refused.
        """
        self.assert_rejected(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
        )
        self.assert_rejected(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd")

    def test_transfer_encoding_not_chunked(self) -> None:
        """
        Transfer-Encoding other than C{chunked} alone is refused: txproxy re-frames bodies.
        """
        for coding in [b"gzip", b"gzip, chunked", b"chunked, gzip", b"identity"]:
            self.assert_rejected(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\nabc"
            )

    def test_invalid_chunk_size(self) -> None:
        """
        A bad chunk size is refused.
        """
        self.assert_rejected(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\nabc\r\n0\r\n\r\n"
        )

    def test_invalid_fields(self) -> None:
        """
        Invalid field names, values, obs-fold and bare CR are refused.
        """
        for field in [b"X(: v", b"X : v", b"X: a\x00b", b"X: a\rb", b"X: a\r\n b"]:
            self.assert_rejected(b"HTTP/1.1 200 OK\r\n" + field + b"\r\nContent-Length: 0\r\n\r\n")

    def test_invalid_status_line(self) -> None:
        """
        Versions other than 1.0 and 1.1, status codes outside 100 to 599, and
        controls in the reason phrase are refused.
        """
        for line in [
            b"HTTP/2.0 200 OK",
            b"HTTP/0.9 200 OK",
            b"HTTP/1.1 099 Low",
            b"HTTP/1.1 600 High",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 200 O\x01K",
            b"ICY 200 OK",
        ]:
            self.assert_rejected(line + b"\r\nContent-Length: 0\r\n\r\n")

    def test_interim_with_framing(self) -> None:
        """
        A 1xx response with Content-Length or Transfer-Encoding is refused.
        """
        self.assert_rejected(b"HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\nabc")
        self.assert_rejected(b"HTTP/1.1 150 Odd\r\nTransfer-Encoding: chunked\r\n\r\n")

    def test_header_section_too_large(self) -> None:
        """
        A head over C{max_header_size} or C{max_headers} is refused, even a byte at a time.
        """
        reader = ResponseReader(max_header_size=1024)
        events = reader.feed(b"HTTP/1.1 200 OK\r\nX: " + b"v" * 1024 + b"\r\n\r\n")
        self.assertEqual(events, [BadMessage("header section too large", 502)])
        reader = ResponseReader(max_headers=3)
        fields = b"".join(b"X-%d: v\r\n" % (index,) for index in range(4))
        events = reader.feed(b"HTTP/1.1 200 OK\r\n" + fields + b"\r\n")
        self.assertEqual(events, [BadMessage("too many header fields", 502)])
        reader = ResponseReader(max_header_size=1024)
        events = feed_bytewise(reader, b"HTTP/1.1 200 OK\r\nX: " + b"v" * 2000)
        self.assertEqual(events, [BadMessage("header section too large", 502)])


def _instances(cls: type) -> int:
    """
    How many objects of exactly C{cls} the garbage collector knows of.
    """
    return sum(1 for each in gc.get_objects() if type(each) is cls)


class ReaderCollectionTests(SynchronousTestCase):
    """
    A reader and its llhttp parser refer to each other (the parser calls the
    reader back); once a connection drops its reader, the garbage collector
    must free both, or every connection leaks them. mypyc once compiled the
    readers so that the collector could not see the cycle.
    """

    def assertCollected(self, make: Callable[[], object], cls: type) -> None:
        gc.collect()
        before = _instances(cls)
        for _ in range(20):
            make()
        gc.collect()
        self.assertEqual(_instances(cls), before)

    def test_request_reader(self) -> None:
        """
        A L{RequestReader} that parsed a request is collected once dropped.
        """

        def make() -> object:
            reader = RequestReader()
            reader.feed(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
            return reader

        self.assertCollected(make, RequestReader)

    def test_response_reader(self) -> None:
        """
        A L{ResponseReader} that parsed a response is collected once dropped.
        """

        def make() -> object:
            reader = ResponseReader()
            reader.expect(b"GET")
            reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return reader

        self.assertCollected(make, ResponseReader)
