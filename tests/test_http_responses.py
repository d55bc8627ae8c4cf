# -*- test-case-name: tests.test_http_responses -*-
"""
Tests for L{txproxy.http.responses}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txproxy.http.responses import CLOSING_STATUSES, LocalResponse, local_response

STATUSES = (400, 403, 404, 405, 408, 413, 414, 429, 431, 500, 502, 503, 504)
BROWSER = b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


class LocalResponseTests(SynchronousTestCase):
    """
    Tests for L{LocalResponse}.
    """

    def test_to_bytes(self) -> None:
        """
        The message is the status line, the fields, C{Content-Length}, and
        then the body.
        """
        response = LocalResponse(
            418, b"I'm a teapot", ((b"Content-Type", b"text/plain"),), b"short\n", False
        )
        self.assertEqual(
            response.to_bytes(),
            b"HTTP/1.1 418 I'm a teapot\r\n"
            b"Content-Type: text/plain\r\n"
            b"Content-Length: 6\r\n"
            b"\r\n"
            b"short\n",
        )

    def test_close(self) -> None:
        """
        A response that ends the connection says so with C{Connection: close}.
        """
        response = LocalResponse(400, b"Bad Request", (), b"", True)
        self.assertEqual(
            response.to_bytes(),
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )

    def test_head_only(self) -> None:
        """
        The answer to C{HEAD} is the head alone, still giving the body's length.
        """
        response = LocalResponse(404, b"Not Found", (), b"404 Not Found\n", False)
        self.assertEqual(
            response.to_bytes(head_only=True),
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 14\r\n\r\n",
        )


class LocalResponseFunctionTests(SynchronousTestCase):
    """
    Tests for L{local_response}.
    """

    def test_plain_by_default(self) -> None:
        """
        Without C{Accept}, the body is the status in plain text, and the
        response is not to be stored.
        """
        self.assertEqual(
            local_response(404).to_bytes(),
            b"HTTP/1.1 404 Not Found\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Cache-Control: no-store\r\n"
            b"Content-Length: 14\r\n"
            b"\r\n"
            b"404 Not Found\n",
        )

    def test_html_for_browsers(self) -> None:
        """
        A browser's C{Accept}, which prefers C{text/html}, gets a small HTML page.
        """
        response = local_response(502, BROWSER)
        self.assertEqual(response.headers[0], (b"Content-Type", b"text/html; charset=utf-8"))
        self.assertEqual(
            response.body,
            b'<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            b"<title>502 Bad Gateway</title></head>\n"
            b"<body><h1>502 Bad Gateway</h1></body></html>\n",
        )

    def test_accept_preference(self) -> None:
        """
        HTML is sent only when C{text/html} weighs more than C{text/plain}, each
        taking the weight of the most specific range that matches it.
        """
        for accept, html in [
            (b"*/*", False),
            (b"text/html", True),
            (b"TEXT/HTML; charset=utf-8", True),
            (b"text/plain, text/html", False),
            (b"text/html, text/plain;q=0.5", True),
            (b"text/html;q=0.5, text/*", False),
            (b"text/*, text/plain;q=0.1", True),
            (b"text/html;q=0, */*", False),
            (b"application/json", False),
            (b"text/html;q=x, text/plain;q=0.1", False),
            (b"", False),
        ]:
            response = local_response(404, accept)
            self.assertEqual(response.body.startswith(b"<!DOCTYPE"), html, accept)

    def test_every_status(self) -> None:
        """
        Each status txproxy answers with has its reason and a body naming
        only the status, in either form.
        """
        for status in STATUSES:
            plain = local_response(status)
            html = local_response(status, b"text/html")
            title = b"%d %s" % (status, plain.reason)
            self.assertEqual(plain.body, title + b"\n")
            self.assertIn(b"<h1>" + title + b"</h1>", html.body)
            self.assertEqual(plain.reason, html.reason)
            self.assertTrue(plain.to_bytes().startswith(b"HTTP/1.1 " + title + b"\r\n"))
        self.assertEqual(local_response(413).reason, b"Content Too Large")
        self.assertEqual(local_response(431).reason, b"Request Header Fields Too Large")

    def test_no_backend_details(self) -> None:
        """
        No response says more than its status: no field beyond those of its
        type, length and caching, and a body that is the status in a fixed frame.
        """
        frames = {
            b"\n",
            b'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title></title>'
            b"</head>\n<body><h1></h1></body></html>\n",
        }
        for status in STATUSES:
            for accept in (None, b"text/html"):
                response = local_response(status, accept)
                head, _, body = response.to_bytes().partition(b"\r\n\r\n")
                names = {line.split(b":")[0] for line in head.split(b"\r\n")[1:]}
                expected = {b"Content-Type", b"Cache-Control", b"Content-Length"}
                if response.close:
                    expected.add(b"Connection")
                self.assertEqual(names, expected, (status, accept))
                title = b"%d %s" % (status, response.reason)
                self.assertIn(body.replace(title, b""), frames)

    def test_close_defaults(self) -> None:
        """
        The connection is closed after the statuses that leave a request
        unread (and after 500), and kept after the others.
        """
        self.assertEqual(CLOSING_STATUSES, {400, 408, 413, 414, 431, 500})
        for status in STATUSES:
            self.assertEqual(local_response(status).close, status in CLOSING_STATUSES, status)

    def test_close_given(self) -> None:
        """
        The caller may close after any status, or keep the connection after any.
        """
        closing = local_response(404, close=True)
        self.assertTrue(closing.close)
        self.assertIn(b"\r\nConnection: close\r\n", closing.to_bytes())
        kept = local_response(400, close=False)
        self.assertFalse(kept.close)
        self.assertNotIn(b"Connection", kept.to_bytes())

    def test_retry_after(self) -> None:
        """
        C{retry_after} sends C{Retry-After} in seconds.
        """
        response = local_response(429, retry_after=30)
        self.assertEqual(response.headers[-1], (b"Retry-After", b"30"))
        self.assertIn(b"\r\nRetry-After: 30\r\n", response.to_bytes())
        self.assertNotIn(b"Retry-After", local_response(429).to_bytes())

    def test_head_without_body(self) -> None:
        """
        For C{HEAD}, the message ends after the head.
        """
        response = local_response(503, retry_after=5)
        self.assertEqual(response.to_bytes(head_only=True) + response.body, response.to_bytes())
        self.assertTrue(response.to_bytes(head_only=True).endswith(b"\r\n\r\n"))

    def test_cached(self) -> None:
        """
        The same arguments give the same response, not a new one; the same
        goes for another C{Accept} with the same preference.
        """
        self.assertIs(local_response(404), local_response(404))
        self.assertIs(local_response(404, b"text/html"), local_response(404, BROWSER))
        self.assertIs(local_response(404, b"*/*"), local_response(404))
        self.assertIsNot(local_response(404), local_response(404, close=True))

    def test_other_errors(self) -> None:
        """
        Another 4xx or 5xx gets its standard reason.
        """
        self.assertEqual(local_response(451).body, b"451 Unavailable For Legal Reasons\n")

    def test_not_an_error(self) -> None:
        """
        A status that is not an error, or not known, is refused, as is a
        negative C{Retry-After}.
        """
        self.assertRaises(ValueError, local_response, 200)
        self.assertRaises(ValueError, local_response, 499)
        self.assertRaises(ValueError, local_response, 429, retry_after=-1)
