# -*- test-case-name: tests.test_http_cache -*-
"""
Tests for L{txproxy.http.cache}: the RFC 9111 rules, the store, and the flow an exchange drives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from email.utils import formatdate
from random import Random
from typing import TypeVar

from attrs import frozen
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from txproxy.http.cache import (
    ENTRY_OVERHEAD,
    Action,
    CacheControl,
    CachedAnswer,
    CachedResponse,
    CachePolicy,
    CacheStatus,
    CacheStore,
    CombinedPurge,
    Lookup,
    Outcome,
    PendingFills,
    ResponseDecision,
    Unsatisfiable,
    answers_conditionally,
    byte_range,
    conditional_headers,
    conditional_request_headers,
    current_age,
    freshen,
    freshness_lifetime,
    initial_age,
    invalidated_urls,
    normalise_url,
    parse_cache_control,
    parse_http_date,
    request_url,
    select_variant,
    storable,
    vary_key,
    with_cache_status,
)
from txproxy.http.events import Headers, RequestHead, ResponseHead
from txproxy.interfaces import ICachePurge

T0 = 1_700_000_000.0
"""
The time responses are stored at: a whole second, so that HTTP-dates say it exactly.
"""

URL = "http://example.com/a"


def date(offset: float = 0.0) -> bytes:
    """
    The IMF-fixdate C{offset} seconds from L{T0}.
    """
    return formatdate(T0 + offset, usegmt=True).encode("ascii")


def request(
    headers: Headers = (),
    method: bytes = b"GET",
    target: bytes = b"/a",
    host: bytes = b"example.com",
    content_length: int | None = None,
) -> RequestHead:
    """
    Make a request head for C{host}, its C{Host} field first.
    """
    return RequestHead(
        method,
        target,
        b"1.1",
        ((b"Host", host), *headers),
        content_length=content_length,
        host=host,
    )


def response(
    headers: Headers = (), status: int = 200, content_length: int | None = None
) -> ResponseHead:
    """
    Make a response head.
    """
    return ResponseHead(status, b"OK", b"1.1", headers, content_length=content_length)


def stored(
    headers: Headers,
    body: bytes = b"hello",
    status: int = 200,
    request_headers: Headers = (),
    url: str = URL,
    received: float = T0,
    heuristic_limit: float = 0.0,
) -> CachedResponse:
    """
    Make a stored response as if received at C{received} for a request sent then.
    """
    return CachedResponse.from_response(
        url,
        request(request_headers),
        response(headers, status),
        received,
        received,
        heuristic_limit,
        body,
    )


def fill(
    policy: CachePolicy,
    store: CacheStore,
    head: RequestHead,
    answer: ResponseHead,
    body: bytes,
    now: float,
) -> ResponseDecision:
    """
    Run one exchange through the cache as a forwarding exchange does:
    look up, take the response, stream its body into the fill.
    """
    lookup = policy.lookup(store, b"http", head, now)
    decision = policy.on_response(store, lookup, head, answer, now, now)
    if decision.fill is not None:
        decision.fill.feed(body)
        decision.fill.finish()
    return decision


_Row = TypeVar("_Row", bound="_Named")


@frozen
class _Named:
    """
    A row of a table of cases: its name makes its test method's name.
    """

    name: str
    doc: str


def table(
    rows: Sequence[_Row], check: Callable[[SynchronousTestCase, _Row], None]
) -> Callable[[type[SynchronousTestCase]], type[SynchronousTestCase]]:
    """
    Make one test method of a class per row, named C{test_<row name>} and
    documented by the row, that runs C{check} on it.
    """

    def decorate(cls: type[SynchronousTestCase]) -> type[SynchronousTestCase]:
        for row in rows:

            def test(self: SynchronousTestCase, row: _Row = row) -> None:
                check(self, row)

            test.__name__ = "test_" + row.name
            test.__doc__ = row.doc
            if hasattr(cls, test.__name__):
                raise ValueError(f"two rows named {row.name}")
            setattr(cls, test.__name__, test)
        return cls

    return decorate


# RFC 9111 section 5.2: Cache-Control


class CacheControlTests(SynchronousTestCase):
    """
    Tests for L{parse_cache_control}.
    """

    def test_directives(self) -> None:
        """
        Names are case-insensitive; arguments may be tokens or quoted-strings
        (RFC 9111 section 5.2); unknown directives are ignored.
        """
        self.assertEqual(
            parse_cache_control(b'Max-Age=60, S-MAXAGE="30", public, x-ext=1, MUST-revalidate'),
            CacheControl(max_age=60, s_maxage=30, public=True, must_revalidate=True),
        )

    def test_qualified_field_names(self) -> None:
        """
        A quoted argument of C{no-cache} or C{private} lists field names,
        commas inside it not splitting directives.
        """
        parsed = parse_cache_control(b'no-cache="Set-Cookie, X-A", private="X-B", max-age=5')
        self.assertEqual(parsed.no_cache_fields, frozenset({b"set-cookie", b"x-a"}))
        self.assertEqual(parsed.private_fields, frozenset({b"x-b"}))
        self.assertFalse(parsed.no_cache)
        self.assertFalse(parsed.private)
        self.assertEqual(parsed.max_age, 5)

    def test_unqualified_wins(self) -> None:
        """
        An unqualified C{no-cache} beside a qualified one applies: it is the
        more restrictive (RFC 9111 section 4.2.1).
        """
        self.assertTrue(parse_cache_control(b'no-cache="a", no-cache').no_cache)

    def test_first_occurrence(self) -> None:
        """
        A directive given twice counts by its first occurrence (RFC 9111 section 4.2.1).
        """
        self.assertEqual(parse_cache_control(b"max-age=10, max-age=99").max_age, 10)

    def test_invalid_lifetime_is_stale(self) -> None:
        """
        An invalid C{max-age} or C{s-maxage} reads as 0, making the response
        stale (RFC 9111 section 4.2.1); an invalid C{max-stale} is ignored.
        """
        parsed = parse_cache_control(b"max-age=ten, s-maxage=-1, max-stale=x")
        self.assertEqual((parsed.max_age, parsed.s_maxage, parsed.max_stale), (0, 0, None))

    def test_overflow(self) -> None:
        """
        A delta-seconds too large reads as 2**31 (RFC 9111 section 1.2.2).
        """
        self.assertEqual(parse_cache_control(b"max-age=99999999999999").max_age, 2**31)

    def test_max_stale_without_value(self) -> None:
        """
        C{max-stale} without an argument accepts any staleness (RFC 9111 section 5.2.1.2).
        """
        self.assertEqual(parse_cache_control(b"max-stale").max_stale, 2**31)

    def test_escaped_quote(self) -> None:
        """
        A quoted-pair inside a quoted-string does not end it.
        """
        parsed = parse_cache_control(b'private="a\\"b", max-age=3')
        self.assertEqual(parsed.private_fields, frozenset({b'a"b'}))
        self.assertEqual(parsed.max_age, 3)

    def test_long_value(self) -> None:
        """
        A value too long to be memoised parses the same.
        """
        value = b"x-padding=" + b"p" * 300 + b', max-age=7, no-cache="a"'
        parsed = parse_cache_control(value)
        self.assertEqual((parsed.max_age, parsed.no_cache_fields), (7, frozenset({b"a"})))

    def test_empty(self) -> None:
        """
        No directives parse to the defaults.
        """
        self.assertEqual(parse_cache_control(b""), CacheControl())
        self.assertEqual(parse_cache_control(b" , ,"), CacheControl())


class HTTPDateTests(SynchronousTestCase):
    """
    Tests for L{parse_http_date}.
    """

    def test_three_forms(self) -> None:
        """
        IMF-fixdate, RFC 850 and asctime dates all parse (RFC 9110 section 5.6.7).
        """
        expected = 784111777.0
        for value in (
            b"Sun, 06 Nov 1994 08:49:37 GMT",
            b"Sunday, 06-Nov-94 08:49:37 GMT",
            b"Sun Nov  6 08:49:37 1994",
        ):
            self.assertEqual(parse_http_date(value), expected, value)

    def test_invalid(self) -> None:
        """
        What is not a date is L{None}.
        """
        for value in (b"0", b"-1", b"soon", b"\xff"):
            self.assertIsNone(parse_http_date(value), value)


# RFC 9111 section 3: storing responses


@frozen
class StorableRow(_Named):
    """
    A response and whether L{storable} lets a shared cache keep it.
    """

    response_headers: Headers
    expected: tuple[bool, str]
    status: int = 200
    request_headers: Headers = ()
    method: bytes = b"GET"


STORABLE = [
    StorableRow(
        "stored_with_max_age",
        "RFC 9111 3: a 200 to a GET with max-age is stored.",
        ((b"Cache-Control", b"max-age=60"),),
        (True, ""),
    ),
    StorableRow(
        "post_not_stored",
        "RFC 9111 3: only GET responses are stored by txproxy.",
        ((b"Cache-Control", b"max-age=60"),),
        (False, "method"),
        method=b"POST",
    ),
    StorableRow(
        "partial_not_stored",
        "RFC 9111 3: a 206 is not stored; txproxy does not combine parts (3.3).",
        ((b"Cache-Control", b"max-age=60"),),
        (False, "status"),
        status=206,
    ),
    StorableRow(
        "not_modified_not_stored",
        "RFC 9111 3: a 304 is not a response to store.",
        ((b"Cache-Control", b"max-age=60"),),
        (False, "status"),
        status=304,
    ),
    StorableRow(
        "no_store",
        "RFC 9111 5.2.2.5: no-store forbids storing.",
        ((b"Cache-Control", b"max-age=60, no-store"),),
        (False, "no-store"),
    ),
    StorableRow(
        "request_no_store",
        "RFC 9111 5.2.1.5: no-store in the request forbids storing its response.",
        ((b"Cache-Control", b"max-age=60"),),
        (False, "request-no-store"),
        request_headers=((b"Cache-Control", b"no-store"),),
    ),
    StorableRow(
        "must_understand_overrides_no_store",
        "RFC 9111 5.2.2.3: must-understand with a known status overrides no-store.",
        ((b"Cache-Control", b"max-age=60, no-store, must-understand"),),
        (True, ""),
    ),
    StorableRow(
        "must_understand_unknown_status",
        "RFC 9111 5.2.2.3: must-understand with an unknown status is not stored.",
        ((b"Cache-Control", b"max-age=60, no-store, must-understand"),),
        (False, "must-understand"),
        status=299,
    ),
    StorableRow(
        "private_not_stored",
        "RFC 9111 5.2.2.7: a shared cache does not store a private response.",
        ((b"Cache-Control", b"max-age=60, private"),),
        (False, "private"),
    ),
    StorableRow(
        "authorization_not_stored",
        "RFC 9111 3.5: a response to a request with Authorization needs explicit permission.",
        ((b"Cache-Control", b"max-age=60"),),
        (False, "authorization"),
        request_headers=((b"Authorization", b"Bearer t"),),
    ),
    StorableRow(
        "authorization_public",
        "RFC 9111 3.5: public lets a response to an authorized request be stored.",
        ((b"Cache-Control", b"max-age=60, public"),),
        (True, ""),
        request_headers=((b"Authorization", b"Bearer t"),),
    ),
    StorableRow(
        "authorization_s_maxage",
        "RFC 9111 3.5: s-maxage lets a response to an authorized request be stored.",
        ((b"Cache-Control", b"s-maxage=60"),),
        (True, ""),
        request_headers=((b"Authorization", b"Bearer t"),),
    ),
    StorableRow(
        "authorization_must_revalidate",
        "RFC 9111 3.5: must-revalidate lets a response to an authorized request be stored.",
        ((b"Cache-Control", b"max-age=60, must-revalidate"),),
        (True, ""),
        request_headers=((b"Authorization", b"Bearer t"),),
    ),
    StorableRow(
        "vary_star_not_stored",
        "RFC 9111 4.1: Vary: * never matches, so it is not stored.",
        ((b"Cache-Control", b"max-age=60"), (b"Vary", b"Accept, *")),
        (False, "vary-star"),
    ),
    StorableRow(
        "set_cookie_not_stored",
        "RFC 9111 7.3: txproxy does not replay a Set-Cookie to other clients.",
        ((b"Cache-Control", b"max-age=60"), (b"Set-Cookie", b"id=1")),
        (False, "set-cookie"),
    ),
    StorableRow(
        "set_cookie_left_out",
        "RFC 9111 5.2.2.4: no-cache naming Set-Cookie lets the rest be stored without it.",
        ((b"Cache-Control", b'max-age=60, no-cache="Set-Cookie"'), (b"Set-Cookie", b"id=1")),
        (True, ""),
    ),
    StorableRow(
        "set_cookie_private_field",
        "RFC 9111 5.2.2.7: private naming Set-Cookie lets the rest be stored without it.",
        ((b"Cache-Control", b'max-age=60, private="set-cookie"'), (b"Set-Cookie", b"id=1")),
        (True, ""),
    ),
    StorableRow(
        "found_without_lifetime",
        "RFC 9111 3: a 302 with nothing that allows caching is not stored.",
        (),
        (False, "not-cacheable"),
        status=302,
    ),
    StorableRow(
        "found_with_max_age",
        "RFC 9111 3: a 302 with max-age is stored.",
        ((b"Cache-Control", b"max-age=60"),),
        (True, ""),
        status=302,
    ),
    StorableRow(
        "found_public",
        "RFC 9111 3: a public 302 is stored.",
        ((b"Cache-Control", b"public"),),
        (True, ""),
        status=302,
    ),
    StorableRow(
        "found_with_expires",
        "RFC 9111 3: a 302 with Expires is stored.",
        ((b"Expires", date(60)),),
        (True, ""),
        status=302,
    ),
    StorableRow(
        "not_found_heuristic",
        "RFC 9111 3 and RFC 9110 15.1: a 404 is heuristically cacheable.",
        (),
        (True, ""),
        status=404,
    ),
    StorableRow(
        "server_error_explicit",
        "RFC 9111 3: a 500 with max-age may be stored.",
        ((b"Cache-Control", b"max-age=5"),),
        (True, ""),
        status=500,
    ),
]


def check_storable(case: SynchronousTestCase, row: StorableRow) -> None:
    """
    Assert what L{storable} says of a row.
    """
    head = request(row.request_headers, method=row.method)
    case.assertEqual(storable(head, response(row.response_headers, row.status)), row.expected)


@table(STORABLE, check_storable)
class StorableTests(SynchronousTestCase):
    """
    RFC 9111 section 3, one row a rule: L{storable}.
    """


class StoredFieldsTests(SynchronousTestCase):
    """
    RFC 9111 section 3.1: the fields of a stored response.
    """

    def test_fields_not_stored(self) -> None:
        """
        Hop-by-hop fields, those C{Connection} names, C{Content-Length},
        C{Age}, C{Cache-Status} and those a qualified C{no-cache} or
        C{private} names are not stored; the rest keep their order.
        """
        entry = stored(
            (
                (b"Date", date()),
                (b"Cache-Control", b'max-age=60, no-cache="X-Secret", private="X-Private"'),
                (b"Connection", b"X-Hop"),
                (b"X-Hop", b"1"),
                (b"Keep-Alive", b"timeout=5"),
                (b"Content-Type", b"text/plain"),
                (b"Content-Length", b"5"),
                (b"Age", b"3"),
                (b"Cache-Status", b"upstream; hit"),
                (b"X-Secret", b"s"),
                (b"X-Private", b"p"),
                (b"ETag", b'"1"'),
            )
        )
        self.assertEqual(
            entry.headers,
            (
                (b"Date", date()),
                (b"Cache-Control", b'max-age=60, no-cache="X-Secret", private="X-Private"'),
                (b"Content-Type", b"text/plain"),
                (b"ETag", b'"1"'),
            ),
        )

    def test_size_counts_fields_and_body(self) -> None:
        """
        A stored response counts its body, its fields (with 4 bytes of
        framing each), its URL, its reason and a fixed overhead.
        """
        entry = stored(((b"Date", date()), (b"ETag", b'"1"')), body=b"x" * 100)
        fields = (4 + 29 + 4) + (4 + 3 + 4)
        self.assertEqual(entry.size, ENTRY_OVERHEAD + 100 + len(URL) + len(b"OK") + fields)

    def test_date_added(self) -> None:
        """
        RFC 9110 6.6.1: a response stored without a valid C{Date} gets one,
        the time it was received, so that its age reads the same downstream.
        """
        entry = stored(((b"ETag", b'"1"'),), received=T0 + 7)
        self.assertEqual(entry.headers, ((b"ETag", b'"1"'), (b"Date", date(7))))
        invalid = stored(((b"Date", b"yesterday"), (b"ETag", b'"1"')), received=T0 + 7)
        self.assertEqual(invalid.headers, ((b"ETag", b'"1"'), (b"Date", date(7))))


# RFC 9111 section 4.2.1 and 4.2.2: freshness lifetime


@frozen
class LifetimeRow(_Named):
    """
    A response and its freshness lifetime, received at L{T0}.
    """

    headers: Headers
    expected: float
    status: int = 200
    heuristic_limit: float = 0.0


LIFETIMES = [
    LifetimeRow(
        "s_maxage_first",
        "RFC 9111 4.2.1: s-maxage wins over max-age and Expires in a shared cache.",
        ((b"Cache-Control", b"max-age=600, s-maxage=10"), (b"Expires", date(900))),
        10.0,
    ),
    LifetimeRow(
        "max_age_over_expires",
        "RFC 9111 4.2.1: max-age wins over Expires.",
        ((b"Cache-Control", b"max-age=600"), (b"Date", date()), (b"Expires", date(900))),
        600.0,
    ),
    LifetimeRow(
        "expires_minus_date",
        "RFC 9111 4.2.1: Expires minus Date.",
        ((b"Date", date(-100)), (b"Expires", date(200))),
        300.0,
    ),
    LifetimeRow(
        "expires_without_date",
        "RFC 9111 4.2.1: Expires minus the time of receipt when there is no Date.",
        ((b"Expires", date(200)),),
        200.0,
    ),
    LifetimeRow(
        "expires_invalid",
        "RFC 9111 5.3: an invalid Expires, such as 0, is in the past.",
        ((b"Date", date()), (b"Expires", b"0")),
        0.0,
    ),
    LifetimeRow(
        "expires_before_date",
        "RFC 9111 4.2.1: an Expires before Date gives no freshness.",
        ((b"Date", date()), (b"Expires", date(-50))),
        0.0,
    ),
    LifetimeRow(
        "max_age_invalid",
        "RFC 9111 4.2.1: an invalid max-age makes the response stale.",
        ((b"Cache-Control", b"max-age=soon"), (b"Expires", date(900))),
        0.0,
    ),
    LifetimeRow(
        "heuristic_tenth_of_last_modified",
        "RFC 9111 4.2.2: a tenth of the time since Last-Modified.",
        ((b"Date", date()), (b"Last-Modified", date(-1000))),
        100.0,
        heuristic_limit=3600.0,
    ),
    LifetimeRow(
        "heuristic_capped",
        "RFC 9111 4.2.2: heuristic freshness is capped by default_ttl.",
        ((b"Date", date()), (b"Last-Modified", date(-1_000_000))),
        3600.0,
        heuristic_limit=3600.0,
    ),
    LifetimeRow(
        "heuristic_without_last_modified",
        "RFC 9111 4.2.2: without Last-Modified a heuristic status gets default_ttl.",
        ((b"Date", date()),),
        30.0,
        heuristic_limit=30.0,
    ),
    LifetimeRow(
        "heuristic_off",
        "RFC 9111 4.2.2: with default_ttl 0 there is no heuristic freshness.",
        ((b"Date", date()), (b"Last-Modified", date(-1000))),
        0.0,
    ),
    LifetimeRow(
        "heuristic_not_for_found",
        "RFC 9111 4.2.2: a 302 is not heuristically cacheable.",
        ((b"Date", date()), (b"Last-Modified", date(-1000))),
        0.0,
        status=302,
        heuristic_limit=3600.0,
    ),
    LifetimeRow(
        "heuristic_for_public",
        "RFC 9111 4.2.2: public makes any status heuristically cacheable.",
        ((b"Cache-Control", b"public"), (b"Date", date()), (b"Last-Modified", date(-1000))),
        100.0,
        status=302,
        heuristic_limit=3600.0,
    ),
    LifetimeRow(
        "heuristic_not_with_explicit",
        "RFC 9111 4.2.2: no heuristic when an explicit expiration time is given.",
        ((b"Cache-Control", b"max-age=0"), (b"Last-Modified", date(-1000))),
        0.0,
        heuristic_limit=3600.0,
    ),
]


def check_lifetime(case: SynchronousTestCase, row: LifetimeRow) -> None:
    """
    Assert the lifetime of a row's response, and that a stored one has it.
    """
    head = response(row.headers, row.status)
    case.assertEqual(freshness_lifetime(head, T0, row.heuristic_limit), row.expected)
    entry = stored(row.headers, status=row.status, heuristic_limit=row.heuristic_limit)
    case.assertEqual(entry.lifetime, row.expected)


@table(LIFETIMES, check_lifetime)
class FreshnessLifetimeTests(SynchronousTestCase):
    """
    RFC 9111 sections 4.2.1 and 4.2.2, one row a rule: L{freshness_lifetime}.
    """


# RFC 9111 section 4.2.3: age


@frozen
class AgeRow(_Named):
    """
    A response's C{Date} and C{Age}, its exchange's times and the age it has
    at C{now}, all as offsets from L{T0}.
    """

    headers: Headers
    sent: float
    received: float
    now: float
    expected: float


AGES = [
    AgeRow(
        "resident_time",
        "RFC 9111 4.2.3: with Date at receipt and no Age, the age is the time stored.",
        ((b"Date", date()),),
        0.0,
        0.0,
        25.0,
        25.0,
    ),
    AgeRow(
        "age_plus_delay",
        "RFC 9111 4.2.3: the Age received plus the response delay, plus the time stored.",
        ((b"Date", date(2)), (b"Age", b"30")),
        0.0,
        2.0,
        12.0,
        42.0,
    ),
    AgeRow(
        "apparent_age",
        "RFC 9111 4.2.3: a Date older than the Age counts (apparent age).",
        ((b"Date", date(-100)), (b"Age", b"10")),
        0.0,
        0.0,
        0.0,
        100.0,
    ),
    AgeRow(
        "date_in_future",
        "RFC 9111 4.2.3: a Date after receipt gives no negative apparent age.",
        ((b"Date", date(500)),),
        0.0,
        1.0,
        1.0,
        1.0,
    ),
    AgeRow(
        "age_list_first",
        "RFC 9111 5.1: a list-valued Age counts by its first member.",
        ((b"Date", date()), (b"Age", b"30, 40")),
        0.0,
        0.0,
        0.0,
        30.0,
    ),
    AgeRow(
        "age_invalid_ignored",
        "RFC 9111 5.1: an invalid Age is ignored.",
        ((b"Date", date()), (b"Age", b"-5")),
        0.0,
        0.0,
        3.0,
        3.0,
    ),
]


def check_age(case: SynchronousTestCase, row: AgeRow) -> None:
    """
    Assert the age of a row's response at its C{now}, on a fake clock.
    """
    clock = Clock()
    clock.advance(T0 + row.sent)
    sent = clock.seconds()
    clock.advance(row.received - row.sent)
    entry = CachedResponse.from_response(
        URL, request(), response(row.headers), sent, clock.seconds(), 0.0, b""
    )
    clock.advance(row.now - row.received)
    case.assertEqual(current_age(entry, clock.seconds()), row.expected)


@table(AGES, check_age)
class AgeTests(SynchronousTestCase):
    """
    RFC 9111 section 4.2.3, one row a rule: L{current_age}.
    """

    def test_initial_age(self) -> None:
        """
        L{initial_age} is the larger of the apparent age and the corrected Age.
        """
        self.assertEqual(initial_age(10, T0 - 50, T0 - 1, T0), 50.0)
        self.assertEqual(initial_age(10, T0, T0 - 1, T0), 11.0)
        self.assertEqual(initial_age(0, None, T0, T0), 0.0)


# RFC 9111 sections 4.2, 4.2.4 and 5.2.1: what a lookup finds


@frozen
class LookupRow(_Named):
    """
    A response stored at L{T0} and a request looked up C{elapsed} seconds
    later, with what the lookup finds.
    """

    headers: Headers
    elapsed: float
    outcome: Outcome
    status: bytes
    request_headers: Headers = ()
    method: bytes = b"GET"
    policy: CachePolicy = CachePolicy()


def _cc(value: bytes, *more: tuple[bytes, bytes]) -> Headers:
    """
    A C{Date} of L{T0}, a C{Cache-Control} and C{more} fields.
    """
    return ((b"Date", date()), (b"Cache-Control", value), *more)


LOOKUPS = [
    LookupRow(
        "fresh_hit",
        "RFC 9111 4.2: a fresh response is served.",
        _cc(b"max-age=60"),
        30,
        Outcome.HIT,
        b"txproxy; hit",
    ),
    LookupRow(
        "stale_revalidated",
        "RFC 9111 4.2: a stale response is validated first (4.3).",
        _cc(b"max-age=60"),
        61,
        Outcome.REVALIDATE,
        b"txproxy; fwd=stale",
    ),
    LookupRow(
        "age_received_counts",
        "RFC 9111 4.2.3: an Age received makes the response older.",
        _cc(b"max-age=60", (b"Age", b"50")),
        11,
        Outcome.REVALIDATE,
        b"txproxy; fwd=stale",
    ),
    LookupRow(
        "no_cache_response",
        "RFC 9111 5.2.2.4: a no-cache response is validated every time.",
        _cc(b"max-age=60, no-cache"),
        1,
        Outcome.REVALIDATE,
        b"txproxy; fwd=stale",
    ),
    LookupRow(
        "request_no_cache",
        "RFC 9111 5.2.1.4: a request with no-cache has a fresh response validated.",
        _cc(b"max-age=60"),
        1,
        Outcome.REVALIDATE,
        b"txproxy; fwd=request",
        request_headers=((b"Cache-Control", b"no-cache"),),
    ),
    LookupRow(
        "request_max_age_zero",
        "RFC 9111 5.2.1.1: max-age=0 in a request (a reload) validates.",
        _cc(b"max-age=60"),
        1,
        Outcome.REVALIDATE,
        b"txproxy; fwd=request",
        request_headers=((b"Cache-Control", b"max-age=0"),),
    ),
    LookupRow(
        "request_max_age_met",
        "RFC 9111 5.2.1.1: a response younger than the request's max-age is served.",
        _cc(b"max-age=60"),
        20,
        Outcome.HIT,
        b"txproxy; hit",
        request_headers=((b"Cache-Control", b"max-age=30"),),
    ),
    LookupRow(
        "request_min_fresh",
        "RFC 9111 5.2.1.3: a response fresh for less than min-fresh is validated.",
        _cc(b"max-age=60"),
        30,
        Outcome.REVALIDATE,
        b"txproxy; fwd=request",
        request_headers=((b"Cache-Control", b"min-fresh=40"),),
    ),
    LookupRow(
        "request_max_stale",
        "RFC 9111 5.2.1.2: max-stale lets a stale response be served.",
        _cc(b"max-age=60"),
        70,
        Outcome.HIT,
        b"txproxy; hit; detail=max-stale",
        request_headers=((b"Cache-Control", b"max-stale=30"),),
    ),
    LookupRow(
        "request_max_stale_exceeded",
        "RFC 9111 5.2.1.2: beyond max-stale the response is validated.",
        _cc(b"max-age=60"),
        100,
        Outcome.REVALIDATE,
        b"txproxy; fwd=stale",
        request_headers=((b"Cache-Control", b"max-stale=30"),),
    ),
    LookupRow(
        "request_max_stale_any",
        "RFC 9111 5.2.1.2: max-stale without a value accepts any staleness.",
        _cc(b"max-age=60"),
        100_000,
        Outcome.HIT,
        b"txproxy; hit; detail=max-stale",
        request_headers=((b"Cache-Control", b"max-stale"),),
    ),
    LookupRow(
        "must_revalidate_over_max_stale",
        "RFC 9111 5.2.2.2: must-revalidate forbids serving stale, max-stale or not.",
        _cc(b"max-age=60, must-revalidate"),
        70,
        Outcome.REVALIDATE,
        b"txproxy; fwd=stale",
        request_headers=((b"Cache-Control", b"max-stale=30"),),
    ),
    LookupRow(
        "proxy_revalidate_over_max_stale",
        "RFC 9111 5.2.2.8: proxy-revalidate forbids a shared cache serving stale.",
        _cc(b"max-age=60, proxy-revalidate"),
        70,
        Outcome.REVALIDATE,
        b"txproxy; fwd=stale",
        request_headers=((b"Cache-Control", b"max-stale=30"),),
    ),
    LookupRow(
        "stale_while_revalidate",
        "RFC 5861 3: within stale-while-revalidate the stale response is served and revalidated.",
        _cc(b"max-age=60, stale-while-revalidate=30"),
        80,
        Outcome.STALE,
        b"txproxy; hit; detail=stale-while-revalidate",
    ),
    LookupRow(
        "stale_while_revalidate_over",
        "RFC 5861 3: past stale-while-revalidate the response is validated first.",
        _cc(b"max-age=60, stale-while-revalidate=30"),
        91,
        Outcome.REVALIDATE,
        b"txproxy; fwd=stale",
    ),
    LookupRow(
        "stale_while_revalidate_configured",
        "RFC 9111 4.2.4: the configured window serves stale where the response is silent.",
        _cc(b"max-age=60"),
        80,
        Outcome.STALE,
        b"txproxy; hit; detail=stale-while-revalidate",
        policy=CachePolicy(stale_while_revalidate=30),
    ),
    LookupRow(
        "configured_window_not_past_s_maxage",
        "RFC 9111 5.2.2.10: s-maxage implies proxy-revalidate, so no configured window.",
        _cc(b"s-maxage=60"),
        80,
        Outcome.REVALIDATE,
        b"txproxy; fwd=stale",
        policy=CachePolicy(stale_while_revalidate=30),
    ),
    LookupRow(
        "directive_beside_s_maxage",
        "RFC 5861 3: the response's own stale-while-revalidate applies beside s-maxage.",
        _cc(b"s-maxage=60, stale-while-revalidate=30"),
        80,
        Outcome.STALE,
        b"txproxy; hit; detail=stale-while-revalidate",
    ),
    LookupRow(
        "must_revalidate_over_configured_window",
        "RFC 9111 4.2.4: must-revalidate forbids the configured window.",
        _cc(b"max-age=60, must-revalidate"),
        80,
        Outcome.REVALIDATE,
        b"txproxy; fwd=stale",
        policy=CachePolicy(stale_while_revalidate=30),
    ),
    LookupRow(
        "request_no_cache_over_stale_while_revalidate",
        "RFC 9111 5.2.1.4: a client asking for validation does not get stale service.",
        _cc(b"max-age=60, stale-while-revalidate=30"),
        80,
        Outcome.REVALIDATE,
        b"txproxy; fwd=stale",
        request_headers=((b"Cache-Control", b"no-cache"),),
    ),
    LookupRow(
        "only_if_cached_fresh",
        "RFC 9111 5.2.1.7: only-if-cached is served a fresh response.",
        _cc(b"max-age=60"),
        10,
        Outcome.HIT,
        b"txproxy; hit",
        request_headers=((b"Cache-Control", b"only-if-cached"),),
    ),
    LookupRow(
        "only_if_cached_stale",
        "RFC 9111 5.2.1.7: only-if-cached with only a stale response gets 504.",
        _cc(b"max-age=60"),
        100,
        Outcome.UNAVAILABLE,
        b"txproxy; fwd=stale",
        request_headers=((b"Cache-Control", b"only-if-cached"),),
    ),
    LookupRow(
        "head_from_get",
        "RFC 9110 9.3.2: a HEAD is answered from the stored GET.",
        _cc(b"max-age=60"),
        10,
        Outcome.HIT,
        b"txproxy; hit",
        method=b"HEAD",
    ),
    LookupRow(
        "post_bypasses",
        "RFC 9111 4: only GET and HEAD are looked up.",
        _cc(b"max-age=60"),
        10,
        Outcome.BYPASS,
        b"txproxy; fwd=method",
        method=b"POST",
    ),
    LookupRow(
        "if_match_bypasses",
        "RFC 9110 13.1.1: If-Match depends on the server's state: the request goes to it.",
        _cc(b"max-age=60"),
        10,
        Outcome.BYPASS,
        b"txproxy; fwd=request",
        request_headers=((b"If-Match", b'"1"'),),
    ),
    LookupRow(
        "heuristic_fresh",
        "RFC 9111 4.2.2: a heuristic lifetime (a tenth of 1000 s) makes a response fresh.",
        ((b"Date", date()), (b"Last-Modified", date(-1000))),
        99,
        Outcome.HIT,
        b"txproxy; hit",
        policy=CachePolicy(heuristic_limit=3600),
    ),
    LookupRow(
        "heuristic_stale",
        "RFC 9111 4.2.2: past the heuristic lifetime the response is validated.",
        ((b"Date", date()), (b"Last-Modified", date(-1000))),
        101,
        Outcome.REVALIDATE,
        b"txproxy; fwd=stale",
        policy=CachePolicy(heuristic_limit=3600),
    ),
    LookupRow(
        "expires_fresh",
        "RFC 9111 4.2.1: fresh until Expires.",
        ((b"Date", date()), (b"Expires", date(100))),
        99,
        Outcome.HIT,
        b"txproxy; hit",
    ),
    LookupRow(
        "expires_stale",
        "RFC 9111 4.2.1: stale after Expires.",
        ((b"Date", date()), (b"Expires", date(100))),
        100,
        Outcome.REVALIDATE,
        b"txproxy; fwd=stale",
    ),
]


def check_lookup(case: SynchronousTestCase, row: LookupRow) -> None:
    """
    Store a row's response at L{T0}, look its request up after C{elapsed}
    seconds on a fake clock, and assert the outcome and C{Cache-Status}.
    """
    clock = Clock()
    clock.advance(T0)
    store = CacheStore(1 << 20, 1 << 16)
    store.put(URL, stored(row.headers, heuristic_limit=row.policy.heuristic_limit))
    clock.advance(row.elapsed)
    lookup = row.policy.lookup(
        store, b"http", request(row.request_headers, method=row.method), clock.seconds()
    )
    case.assertEqual(lookup.outcome, row.outcome)
    case.assertEqual(lookup.status.value(), row.status)


@table(LOOKUPS, check_lookup)
class LookupTests(SynchronousTestCase):
    """
    RFC 9111 sections 4.2, 4.2.4 and 5.2, one row a rule: L{CachePolicy.lookup}.
    """

    def test_uri_miss(self) -> None:
        """
        Nothing stored for the URL is a C{uri-miss}; the response may be stored.
        """
        lookup = CachePolicy().lookup(CacheStore(10_000, 5000), b"http", request(), T0)
        self.assertEqual(lookup.outcome, Outcome.MISS)
        self.assertEqual(lookup.status.value(), b"txproxy; fwd=uri-miss")
        self.assertEqual((lookup.url, lookup.key), (URL, URL))
        self.assertTrue(lookup.may_store)

    def test_only_if_cached_miss(self) -> None:
        """
        RFC 9111 5.2.1.7: C{only-if-cached} with nothing stored gets 504.
        """
        head = request(((b"Cache-Control", b"only-if-cached"),))
        lookup = CachePolicy().lookup(CacheStore(10_000, 5000), b"http", head, T0)
        self.assertEqual(lookup.outcome, Outcome.UNAVAILABLE)

    def test_request_with_body_bypasses(self) -> None:
        """
        A C{GET} with content bypasses the cache: its answer may depend on it.
        """
        store = CacheStore(10_000, 5000)
        store.put(URL, stored(_cc(b"max-age=60")))
        lookup = CachePolicy().lookup(store, b"http", request(content_length=3), T0)
        self.assertEqual(lookup.outcome, Outcome.BYPASS)
        self.assertFalse(lookup.may_store)

    def test_request_no_store_not_stored(self) -> None:
        """
        RFC 9111 5.2.1.5: a miss with C{no-store} forwards, but may not store.
        """
        head = request(((b"Cache-Control", b"no-store"),))
        lookup = CachePolicy().lookup(CacheStore(10_000, 5000), b"http", head, T0)
        self.assertEqual(lookup.outcome, Outcome.MISS)
        self.assertFalse(lookup.may_store)

    def test_head_miss_not_stored(self) -> None:
        """
        A C{HEAD} that misses is forwarded, and its response is not stored.
        """
        lookup = CachePolicy().lookup(
            CacheStore(10_000, 5000), b"http", request(method=b"HEAD"), T0
        )
        self.assertEqual(lookup.outcome, Outcome.MISS)
        self.assertFalse(lookup.may_store)

    def test_collapsed(self) -> None:
        """
        RFC 9211 2.7: a request that waited for another's fill says
        C{collapsed} when it is served from it, C{collapsed=?0} when it must
        go to a server after all.
        """
        store = CacheStore(10_000, 5000)
        policy = CachePolicy()
        missed = policy.lookup(store, b"http", request(), T0, collapsed=True)
        self.assertEqual(missed.status.value(), b"txproxy; fwd=uri-miss; collapsed=?0")
        store.put(URL, stored(_cc(b"max-age=60")))
        served = policy.lookup(store, b"http", request(), T0, collapsed=True)
        self.assertEqual(served.outcome, Outcome.HIT)
        self.assertEqual(served.status.value(), b"txproxy; fwd=miss; fwd-status=200; collapsed")


# RFC 9111 section 4.1: Vary


class VaryTests(SynchronousTestCase):
    """
    Tests for L{select_variant} and L{vary_key}.
    """

    def test_normalised(self) -> None:
        """
        RFC 9111 4.1: values match after combining field lines and removing
        whitespace around list members; content-codings ignore case.
        """
        names = (b"accept-encoding", b"accept-language")
        first = ((b"Accept-Encoding", b"GZIP,  br"), (b"Accept-Language", b"en , fr"))
        second = (
            (b"accept-encoding", b"gzip"),
            (b"Accept-Language", b"en,fr"),
            (b"ACCEPT-ENCODING", b" br"),
        )
        self.assertEqual(vary_key(names, first), vary_key(names, second))
        self.assertEqual(
            vary_key(names, first),
            ((b"accept-encoding", b"gzip,br"), (b"accept-language", b"en,fr")),
        )

    def test_absent_differs_from_empty(self) -> None:
        """
        A field the request did not send does not match one sent empty.
        """
        self.assertNotEqual(
            vary_key((b"x",), ()),
            vary_key((b"x",), ((b"X", b""),)),
        )

    def test_selects_matching_variant(self) -> None:
        """
        RFC 9111 4.1: the stored response whose request had the same values is selected.
        """
        headers = _cc(b"max-age=60", (b"Vary", b"Accept-Encoding"))
        gzip = stored(headers, b"gz", request_headers=((b"Accept-Encoding", b"gzip"),))
        plain = stored(headers, b"plain")
        variants = [gzip, plain]
        self.assertIs(select_variant(variants, ((b"Accept-Encoding", b"gzip"),)), gzip)
        self.assertIs(select_variant(variants, ()), plain)
        self.assertIsNone(select_variant(variants, ((b"Accept-Encoding", b"br"),)))

    def test_vary_names_case_and_order(self) -> None:
        """
        C{Vary} names are compared in lower case, in any order, each once.
        """
        entry = stored(
            _cc(
                b"max-age=60",
                (b"Vary", b"Accept-Language, accept-encoding"),
                (b"Vary", b"ACCEPT-encoding"),
            )
        )
        self.assertEqual(entry.vary_names, (b"accept-encoding", b"accept-language"))

    def test_most_recent_first(self) -> None:
        """
        RFC 9111 4.1: of several matches, the first (most recent) is selected.
        """
        newer = stored(_cc(b"max-age=60"), b"new")
        older = stored(_cc(b"max-age=60", (b"Vary", b"X")), b"old")
        self.assertIs(select_variant([newer, older], ()), newer)

    def test_vary_miss(self) -> None:
        """
        Responses stored for the key, none for the request's values: C{vary-miss}.
        """
        store = CacheStore(10_000, 5000)
        headers = _cc(b"max-age=60", (b"Vary", b"Accept-Language"))
        store.put(URL, stored(headers, request_headers=((b"Accept-Language", b"en"),)))
        head = request(((b"Accept-Language", b"fr"),))
        lookup = CachePolicy().lookup(store, b"http", head, T0)
        self.assertEqual((lookup.outcome, lookup.status.fwd), (Outcome.MISS, "vary-miss"))
        french = stored(headers, b"fr", request_headers=((b"Accept-Language", b"fr"),))
        store.put(URL, french)
        self.assertEqual(len(store), 2)
        self.assertIs(CachePolicy().lookup(store, b"http", head, T0).entry, french)

    def test_variants_bounded(self) -> None:
        """
        A key keeps at most C{max_variants} responses, the least recent of it going first.
        """
        store = CacheStore(1 << 20, 1 << 16, max_variants=2)
        headers = _cc(b"max-age=60", (b"Vary", b"X"))
        for value in (b"1", b"2", b"3"):
            store.put(URL, stored(headers, value, request_headers=((b"X", value),)))
        self.assertEqual([entry.body for entry in store.variants(URL)], [b"3", b"2"])


# The store


def _sized(url: str, total: int, vary: bytes | None = None) -> CachedResponse:
    """
    A stored response for C{url} whose size is C{total} bytes.
    """
    headers: Headers = ((b"Vary", b"X"),) if vary is not None else ()
    request_headers: Headers = ((b"X", vary),) if vary is not None else ()
    empty = stored(headers, b"", url=url, request_headers=request_headers)
    return stored(headers, b"x" * (total - empty.size), url=url, request_headers=request_headers)


class CacheStoreTests(SynchronousTestCase):
    """
    Tests for L{CacheStore}.
    """

    def test_provides_purge(self) -> None:
        """
        The store provides L{ICachePurge} for the admin API.
        """
        self.assertTrue(verifyObject(ICachePurge, CacheStore(10, 10)))
        self.assertTrue(verifyObject(ICachePurge, CombinedPurge([])))

    def test_bounds_checked(self) -> None:
        """
        One response may not be larger than the store.
        """
        self.assertRaises(ValueError, CacheStore, 10, 11)
        self.assertRaises(ValueError, CacheStore, 10, 0)

    def test_evicts_least_recently_used(self) -> None:
        """
        Storing past C{max_size} evicts the least recently used responses,
        and a lookup counts as a use.
        """
        store = CacheStore(3000, 1000)
        for name in "abc":
            store.put(f"http://h/{name}", _sized(f"http://h/{name}", 1000))
        self.assertIsNotNone(store.get("http://h/a", ()))
        store.put("http://h/d", _sized("http://h/d", 1000))
        self.assertEqual(
            sorted(key for key, _ in store), ["http://h/a", "http://h/c", "http://h/d"]
        )
        self.assertEqual(store.size, 3000)

    def test_lookup_counts_as_use(self) -> None:
        """
        A lookup through the policy moves the response found to the most
        recently used end.
        """
        store = CacheStore(2 * 1000, 1000)
        first, second = "http://example.com/a", "http://example.com/b"
        store.put(first, _sized(first, 1000))
        store.put(second, _sized(second, 1000))
        CachePolicy().lookup(store, b"http", request(), T0)
        store.put("http://example.com/c", _sized("http://example.com/c", 1000))
        self.assertEqual([key for key, _ in store], [first, "http://example.com/c"])

    def test_evicts_whole_variants_until_it_fits(self) -> None:
        """
        A large response evicts as many variants as it needs, oldest first,
        and the byte count follows.
        """
        store = CacheStore(3000, 2500)
        store.put(URL, _sized(URL, 1000, vary=b"1"))
        store.put(URL, _sized(URL, 1000, vary=b"2"))
        store.put("http://h/b", _sized("http://h/b", 1000))
        store.put("http://h/c", _sized("http://h/c", 1500))
        self.assertEqual([entry.vary for entry in store.variants(URL)], [])
        self.assertEqual(store.size, 2500)
        self.assertEqual(len(store), 2)

    def test_too_large_refused(self) -> None:
        """
        A response larger than C{max_object} is not stored and evicts nothing.
        """
        store = CacheStore(5000, 1000)
        store.put("http://h/a", _sized("http://h/a", 1000))
        self.assertFalse(store.put("http://h/b", _sized("http://h/b", 1001)))
        self.assertEqual((len(store), store.size), (1, 1000))

    def test_replaces_same_variant(self) -> None:
        """
        A response with the same key and C{Vary} values replaces the stored one.
        """
        store = CacheStore(5000, 2000)
        store.put(URL, _sized(URL, 1000))
        newer = _sized(URL, 1200)
        store.put(URL, newer)
        self.assertEqual(list(store.variants(URL)), [newer])
        self.assertEqual(store.size, 1200)

    def test_discard_only_the_same(self) -> None:
        """
        L{CacheStore.discard} removes a response only if it is still the one stored.
        """
        store = CacheStore(5000, 2000)
        old = _sized(URL, 1000)
        store.put(URL, old)
        newer = _sized(URL, 1100)
        store.put(URL, newer)
        self.assertFalse(store.discard(URL, old))
        self.assertTrue(store.discard(URL, newer))
        self.assertEqual((len(store), store.size), (0, 0))

    def test_purge_url_every_variant(self) -> None:
        """
        Purging a URL removes all its variants and says how many; the URL is
        normalised as keys are.
        """
        store = CacheStore(10_000, 2000)
        store.put(URL, _sized(URL, 1000, vary=b"1"))
        store.put(URL, _sized(URL, 1000, vary=b"2"))
        store.put("http://example.com/b", _sized("http://example.com/b", 1000))
        self.assertEqual(store.purge_url("HTTP://Example.COM:80/a"), 2)
        self.assertEqual(store.purge_url(URL), 0)
        self.assertEqual((len(store), store.size), (1, 1000))

    def test_purge_prefix(self) -> None:
        """
        Purging a prefix removes every response whose URL starts with it.
        """
        store = CacheStore(10_000, 2000)
        for path in ("/static/a", "/static/b?v=1", "/api/c"):
            store.put("http://example.com" + path, _sized("http://example.com" + path, 1000))
        self.assertEqual(store.purge_prefix("http://example.com/static/"), 2)
        self.assertEqual([key for key, _ in store], ["http://example.com/api/c"])

    def test_purge_not_a_url(self) -> None:
        """
        What is not an absolute http or https URL is refused with L{ValueError},
        which the admin API answers with 400.
        """
        store = CacheStore(10, 10)
        self.assertRaises(ValueError, store.purge_url, "/a")
        self.assertRaises(ValueError, store.purge_prefix, "ftp://example.com/")

    def test_purge_under_configured_key(self) -> None:
        """
        A response stored under a configured key is purged by its URL.
        """
        policy = CachePolicy(key_function=lambda url, head: url.partition("?")[0])
        store = CacheStore(10_000, 5000)
        fill(
            policy,
            store,
            request(target=b"/a?v=1"),
            response(_cc(b"max-age=60")),
            b"x",
            T0,
        )
        self.assertEqual([key for key, _ in store], [URL])
        self.assertEqual(store.purge_url(URL), 0)
        self.assertEqual(store.purge_url(URL + "?v=1"), 1)
        self.assertEqual(len(store), 0)

    def test_combined_purge(self) -> None:
        """
        L{CombinedPurge} purges every store and adds up the counts.
        """
        stores = [CacheStore(10_000, 2000), CacheStore(10_000, 2000)]
        for store in stores:
            store.put(URL, _sized(URL, 1000))
        self.assertEqual(CombinedPurge(stores).purge_url(URL), 2)
        stores[0].put(URL, _sized(URL, 1000))
        self.assertEqual(CombinedPurge(stores).purge_prefix("http://example.com/"), 1)

    def test_never_past_max_size(self) -> None:
        """
        Under random stores, lookups, purges and removals the store never
        holds more than C{max_size} bytes, its byte count is the sum of its
        responses' sizes, and every response is reachable by key and URL.
        """
        for seed in range(20):
            random = Random(seed)
            store = CacheStore(20_000, 6000, max_variants=3)
            urls = [f"http://example.com/{index}" for index in range(12)]
            for _ in range(400):
                url = random.choice(urls)
                action = random.random()
                if action < 0.6:
                    vary = random.choice([None, b"a", b"b", b"c", b"d"])
                    size = random.randint(ENTRY_OVERHEAD + 60, 7000)
                    entry = _sized(url, size, vary)
                    self.assertEqual(store.put(url, entry), size <= 6000)
                elif action < 0.8:
                    store.get(url, ((b"X", random.choice([b"a", b"b"])),))
                elif action < 0.9:
                    before = len(store)
                    removed = store.purge_url(url)
                    self.assertEqual(len(store), before - removed)
                else:
                    store.remove(url)
                held = list(store)
                self.assertLessEqual(store.size, store.max_size)
                self.assertEqual(store.size, sum(entry.size for _, entry in held))
                self.assertEqual(len(held), len(store))
                for key, entry in held:
                    self.assertIn(entry, store.variants(key))
                    self.assertLessEqual(len(store.variants(key)), 3)
            # Everything left can be purged by URL.
            self.assertEqual(sum(store.purge_url(url) for url in urls), len(held))
            self.assertEqual((len(store), store.size), (0, 0))


class ResponseFillTests(SynchronousTestCase):
    """
    Tests for L{ResponseFill}: a body collected while it streams.
    """

    def setUp(self) -> None:
        self.store = CacheStore(100_000, 2000)
        self.policy = CachePolicy()
        self.head = request()
        self.lookup = self.policy.lookup(self.store, b"http", self.head, T0)

    def decide(self, content_length: int | None = None) -> ResponseDecision:
        """
        Take a storable response with C{content_length}.
        """
        answer = response(_cc(b"max-age=60"), content_length=content_length)
        return self.policy.on_response(self.store, self.lookup, self.head, answer, T0, T0)

    def test_chunks_stored(self) -> None:
        """
        Chunks fed in are stored as one body when the response ends.
        """
        fill = self.decide().fill
        assert fill is not None
        for chunk in (b"ab", b"", b"cd"):
            fill.feed(chunk)
        entry = fill.finish()
        assert entry is not None
        self.assertEqual(entry.body, b"abcd")
        self.assertEqual(self.store.get(URL, ()), entry)
        self.assertFalse(fill.active)

    def test_gives_up_past_max_object(self) -> None:
        """
        A body of unknown length is dropped as soon as the response grows
        past C{max_object}; what follows is ignored and nothing is stored.
        """
        fill = self.decide().fill
        assert fill is not None
        fill.feed(b"x" * 1000)
        self.assertTrue(fill.active)
        fill.feed(b"x" * 1000)
        self.assertFalse(fill.active)
        fill.feed(b"x")
        self.assertIsNone(fill.finish())
        self.assertEqual(len(self.store), 0)

    def test_known_too_large(self) -> None:
        """
        A C{Content-Length} too large to store means no fill at all, and says why.
        """
        decision = self.decide(content_length=5000)
        self.assertIsNone(decision.fill)
        self.assertEqual(
            decision.status.value(),
            b"txproxy; fwd=uri-miss; fwd-status=200; stored=?0; detail=too-large",
        )

    def test_short_body_not_stored(self) -> None:
        """
        RFC 9111 3.3: a body shorter than its C{Content-Length} is incomplete: not stored.
        """
        fill = self.decide(content_length=10).fill
        assert fill is not None
        fill.feed(b"12345")
        self.assertIsNone(fill.finish())
        self.assertEqual(len(self.store), 0)

    def test_abandon(self) -> None:
        """
        A response that breaks off stores nothing.
        """
        fill = self.decide().fill
        assert fill is not None
        fill.feed(b"abc")
        fill.abandon()
        self.assertIsNone(fill.finish())
        self.assertEqual(len(self.store), 0)


# RFC 9111 section 4.3: validation


class ValidationTests(SynchronousTestCase):
    """
    Tests for revalidation: L{conditional_headers}, L{freshen} and the 304 flow.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = CacheStore(100_000, 10_000)
        self.policy = CachePolicy()
        self.entry = stored(
            (
                (b"Date", date()),
                (b"Cache-Control", b"max-age=60"),
                (b"ETag", b'"v1"'),
                (b"Last-Modified", date(-3600)),
                (b"Content-Type", b"text/plain"),
                (b"X-Old", b"1"),
            ),
            b"body",
        )
        self.store.put(URL, self.entry)

    def stale_lookup(self, headers: Headers = ()) -> Lookup:
        """
        Look a request up once the stored response is stale.
        """
        self.clock.advance(100)
        lookup = self.policy.lookup(self.store, b"http", request(headers), self.clock.seconds())
        self.assertEqual(lookup.outcome, Outcome.REVALIDATE)
        return lookup

    def test_conditional_headers(self) -> None:
        """
        RFC 9111 4.3.1: revalidation sends the entity-tag in C{If-None-Match}
        and C{Last-Modified} in C{If-Modified-Since}.
        """
        self.assertEqual(
            conditional_headers(self.entry),
            ((b"If-None-Match", b'"v1"'), (b"If-Modified-Since", date(-3600))),
        )
        self.assertEqual(conditional_headers(stored(_cc(b"max-age=1"))), ())

    def test_client_preconditions_replaced(self) -> None:
        """
        RFC 9111 4.3.2: the client's preconditions and C{Range} are replaced
        by the cache's own, so that the answer is a 304 or a whole response.
        """
        forwarded = (
            (b"Host", b"example.com"),
            (b"If-None-Match", b'"other"'),
            (b"Range", b"bytes=0-1"),
            (b"If-Range", b'"v1"'),
            (b"Accept", b"*/*"),
        )
        self.assertEqual(
            conditional_request_headers(forwarded, self.entry),
            (
                (b"Host", b"example.com"),
                (b"Accept", b"*/*"),
                (b"If-None-Match", b'"v1"'),
                (b"If-Modified-Since", date(-3600)),
            ),
        )

    def test_not_modified_freshens(self) -> None:
        """
        RFC 9111 4.3.4: a 304 updates the stored fields, keeps the others and
        the body, restarts the age and gives a new lifetime; the response is
        served and stored.
        """
        lookup = self.stale_lookup()
        now = self.clock.seconds()
        not_modified = response(
            (
                (b"Date", date(100)),
                (b"Cache-Control", b"max-age=120"),
                (b"ETag", b'"v1"'),
                (b"X-New", b"2"),
                (b"Connection", b"close"),
            ),
            status=304,
        )
        decision = self.policy.on_response(
            self.store, lookup, request(), not_modified, now - 0.5, now
        )
        self.assertEqual(decision.action, Action.SERVE)
        self.assertEqual(decision.status.value(), b"txproxy; fwd=stale; fwd-status=304; stored")
        fresh = decision.entry
        assert fresh is not None
        self.assertEqual(fresh.body, b"body")
        self.assertEqual(fresh.lifetime, 120.0)
        self.assertEqual(fresh.age(now), 0.5)
        self.assertEqual(
            fresh.headers,
            (
                (b"Last-Modified", date(-3600)),
                (b"Content-Type", b"text/plain"),
                (b"X-Old", b"1"),
                (b"Date", date(100)),
                (b"Cache-Control", b"max-age=120"),
                (b"ETag", b'"v1"'),
                (b"X-New", b"2"),
            ),
        )
        self.assertEqual(list(self.store.variants(URL)), [fresh])
        again = self.policy.lookup(self.store, b"http", request(), now + 10)
        self.assertEqual(again.outcome, Outcome.HIT)

    def test_other_validator_refetches(self) -> None:
        """
        RFC 9111 4.3.4: a 304 with another strong entity-tag may not update
        the stored response; the request is sent again unconditionally.
        """
        lookup = self.stale_lookup()
        decision = self.policy.on_response(
            self.store,
            lookup,
            request(),
            response(((b"ETag", b'"v2"'),), status=304),
            T0,
            T0,
        )
        self.assertEqual(decision.action, Action.REFETCH)
        self.assertEqual(list(self.store.variants(URL)), [self.entry])
        again = self.policy.on_response(
            self.store, lookup.as_miss(), request(), response(_cc(b"max-age=60")), T0, T0
        )
        self.assertEqual(again.status.value(), b"txproxy; fwd=miss; fwd-status=200; stored")
        self.assertIsNotNone(again.fill)

    def test_weak_validator_selects(self) -> None:
        """
        RFC 9111 4.3.4: a weak entity-tag selects by weak comparison; a
        C{Last-Modified} selects by equality; no validator selects the
        response validated.
        """
        weak = response(((b"ETag", b'W/"v1"'),), status=304)
        self.assertIsNotNone(freshen(self.entry, weak, T0, T0))
        by_date = response(((b"Last-Modified", date(-3600)),), status=304)
        self.assertIsNotNone(freshen(self.entry, by_date, T0, T0))
        other_date = response(((b"Last-Modified", date(-1)),), status=304)
        self.assertIsNone(freshen(self.entry, other_date, T0, T0))
        self.assertIsNotNone(freshen(self.entry, response((), status=304), T0, T0))

    def test_not_modified_bringing_no_store(self) -> None:
        """
        A 304 that makes the response C{no-store} serves it this once and
        removes it.
        """
        lookup = self.stale_lookup()
        decision = self.policy.on_response(
            self.store,
            lookup,
            request(),
            response(((b"Cache-Control", b"no-store"),), status=304),
            T0,
            T0,
        )
        self.assertEqual(decision.action, Action.SERVE)
        self.assertEqual(decision.status.stored, False)
        self.assertEqual(len(self.store), 0)

    def test_full_response_replaces(self) -> None:
        """
        RFC 9111 4.3.3: a full response to a revalidation is stored in the
        stale one's place.
        """
        lookup = self.stale_lookup()
        decision = fill_decision(self.policy, self.store, lookup, _cc(b"max-age=60"), b"new")
        self.assertEqual(decision.action, Action.FORWARD)
        self.assertEqual([entry.body for entry in self.store.variants(URL)], [b"new"])

    def test_unstorable_response_removes(self) -> None:
        """
        A full response that may not be stored supersedes the stale one, which is removed.
        """
        lookup = self.stale_lookup()
        decision = fill_decision(self.policy, self.store, lookup, _cc(b"no-store"), b"new")
        self.assertEqual(decision.status.detail, "no-store")
        self.assertEqual(len(self.store), 0)

    def test_other_variant_supersedes(self) -> None:
        """
        RFC 9111 4.3.3: a full response to a revalidation replaces the stale
        response even when it varies otherwise and is stored as another variant.
        """
        lookup = self.stale_lookup(((b"Accept-Language", b"en"),))
        head = request(((b"Accept-Language", b"en"),))
        answer = response(_cc(b"max-age=60", (b"Vary", b"Accept-Language")))
        decision = self.policy.on_response(self.store, lookup, head, answer, T0, T0)
        assert decision.fill is not None
        decision.fill.feed(b"en")
        decision.fill.finish()
        self.assertEqual([entry.body for entry in self.store.variants(URL)], [b"en"])

    def test_server_error_keeps(self) -> None:
        """
        A 5xx to a revalidation does not remove the stale response, which may
        serve later requests once the server is back or within a window.
        """
        lookup = self.stale_lookup()
        now = self.clock.seconds()
        decision = self.policy.on_response(
            self.store, lookup, request(), response((), status=502), now, now
        )
        self.assertEqual(decision.action, Action.FORWARD)
        self.assertEqual(list(self.store.variants(URL)), [self.entry])

    def test_background_revalidation_of_head(self) -> None:
        """
        A C{HEAD} served stale is revalidated with a C{GET}, whose whole
        response may be stored.
        """
        policy = CachePolicy(stale_while_revalidate=60)
        self.clock.advance(100)
        now = self.clock.seconds()
        lookup = policy.lookup(self.store, b"http", request(method=b"HEAD"), now)
        self.assertEqual(lookup.outcome, Outcome.STALE)
        self.assertFalse(lookup.may_store)
        background = lookup.as_get()
        self.assertTrue(background.may_store)
        decision = policy.on_response(
            self.store, background, request(), response(_cc(b"max-age=60")), now, now
        )
        assert decision.fill is not None
        decision.fill.feed(b"new")
        decision.fill.finish()
        self.assertEqual([entry.body for entry in self.store.variants(URL)], [b"new"])

    def test_background_revalidation(self) -> None:
        """
        RFC 5861 3: within C{stale-while-revalidate} the stale response is
        served at once, and the 304 of the background revalidation freshens it.
        """
        policy = CachePolicy(stale_while_revalidate=60)
        self.clock.advance(100)
        now = self.clock.seconds()
        lookup = policy.lookup(self.store, b"http", request(), now)
        self.assertEqual(lookup.outcome, Outcome.STALE)
        assert lookup.entry is not None
        served = policy.answer(lookup.entry, request(), now, lookup.status)
        self.assertEqual((served.head.status, served.body), (200, b"body"))
        self.assertIn(
            (b"Cache-Status", b"txproxy; hit; ttl=-40; detail=stale-while-revalidate"),
            served.head.headers,
        )
        policy.on_response(self.store, lookup, request(), response((), status=304), now, now)
        self.assertEqual(policy.lookup(self.store, b"http", request(), now).outcome, Outcome.HIT)

    def test_client_conditional_after_revalidation(self) -> None:
        """
        The client's own C{If-None-Match} is answered from the freshened
        response: 304.
        """
        client = request(((b"If-None-Match", b'"v1"'),))
        lookup = self.stale_lookup(((b"If-None-Match", b'"v1"'),))
        decision = self.policy.on_response(
            self.store, lookup, client, response((), status=304), T0 + 100, T0 + 100
        )
        assert decision.entry is not None
        answer = self.policy.answer(decision.entry, client, T0 + 100, decision.status)
        self.assertEqual(answer.head.status, 304)


def fill_decision(
    policy: CachePolicy, store: CacheStore, lookup: Lookup, headers: Headers, body: bytes
) -> ResponseDecision:
    """
    Take a 200 with C{headers} and C{body} for C{lookup}'s request and fill it.
    """
    decision = policy.on_response(store, lookup, request(), response(headers), T0, T0)
    if decision.fill is not None:
        decision.fill.feed(body)
        decision.fill.finish()
    return decision


class ClientConditionalTests(SynchronousTestCase):
    """
    Tests for L{answers_conditionally} (RFC 9110 section 13.2.2).
    """

    entry = stored(((b"ETag", b'W/"v1"'), (b"Last-Modified", date(-100))))

    def answers(self, *headers: tuple[bytes, bytes], method: bytes = b"GET") -> bool:
        """
        Whether a request with C{headers} is answered 304 from the entry.
        """
        return answers_conditionally(request(headers, method=method), self.entry)

    def test_if_none_match_weak(self) -> None:
        """
        C{If-None-Match} uses weak comparison, over a list, and C{*} matches.
        """
        self.assertTrue(self.answers((b"If-None-Match", b'"v1"')))
        self.assertTrue(self.answers((b"If-None-Match", b'"x", W/"v1"')))
        self.assertTrue(self.answers((b"If-None-Match", b' "a,b" ,W/"v1"')))
        self.assertFalse(self.answers((b"If-None-Match", b'"a, W/"v1""')))
        self.assertTrue(self.answers((b"If-None-Match", b"*")))
        self.assertFalse(self.answers((b"If-None-Match", b'"v2"')))

    def test_if_modified_since(self) -> None:
        """
        C{If-Modified-Since} is met by a response not modified after the date.
        """
        self.assertTrue(self.answers((b"If-Modified-Since", date(-100))))
        self.assertTrue(self.answers((b"If-Modified-Since", date())))
        self.assertFalse(self.answers((b"If-Modified-Since", date(-101))))
        self.assertFalse(self.answers((b"If-Modified-Since", b"yesterday")))

    def test_if_none_match_first(self) -> None:
        """
        RFC 9110 13.2.2: with C{If-None-Match}, C{If-Modified-Since} is not evaluated.
        """
        self.assertFalse(self.answers((b"If-None-Match", b'"v2"'), (b"If-Modified-Since", date())))

    def test_only_get_and_head(self) -> None:
        """
        RFC 9110 13.1.3: preconditions are evaluated for C{GET} and C{HEAD} only.
        """
        self.assertTrue(self.answers((b"If-None-Match", b"*"), method=b"HEAD"))
        self.assertFalse(self.answers((b"If-None-Match", b"*"), method=b"OPTIONS"))

    def test_only_success(self) -> None:
        """
        RFC 9110 13.2.1: preconditions are ignored for a stored non-2xx.
        """
        missing = stored(((b"ETag", b'"v1"'),), status=404)
        head = request(((b"If-None-Match", b'"v1"'),))
        self.assertFalse(answers_conditionally(head, missing))

    def test_not_modified_answer(self) -> None:
        """
        RFC 9110 15.4.5: a 304 from the cache carries the validators and
        caching fields of the stored response, C{Age} and C{Cache-Status},
        and no content.
        """
        entry = stored(
            (
                (b"Date", date()),
                (b"Cache-Control", b"max-age=60"),
                (b"ETag", b'"v1"'),
                (b"Content-Type", b"text/html"),
                (b"Vary", b"Accept-Encoding"),
            ),
            b"<p>",
        )
        head = request(((b"If-None-Match", b'"v1"'),))
        answer = CachePolicy().answer(entry, head, T0 + 5, CacheStatus(hit=True))
        self.assertEqual(answer.head.status, 304)
        self.assertEqual(answer.body, b"")
        self.assertEqual(
            answer.head.headers,
            (
                (b"Date", date()),
                (b"Cache-Control", b"max-age=60"),
                (b"ETag", b'"v1"'),
                (b"Vary", b"Accept-Encoding"),
                (b"Age", b"5"),
                (b"Cache-Status", b"txproxy; hit; ttl=55"),
            ),
        )


# Answers from the cache


class AnswerTests(SynchronousTestCase):
    """
    Tests for L{CachePolicy.answer}: a stored response made into a client's response.
    """

    entry = stored(
        ((b"Date", date()), (b"Cache-Control", b"max-age=60"), (b"ETag", b'"v1"')),
        b"0123456789",
    )

    def answer(self, *headers: tuple[bytes, bytes], method: bytes = b"GET") -> CachedAnswer:
        """
        The answer 12.5 seconds after storing to a request with C{headers}.
        """
        head = request(headers, method=method)
        return CachePolicy().answer(self.entry, head, T0 + 12.5, CacheStatus(hit=True))

    def test_full(self) -> None:
        """
        RFC 9111 4: a hit carries the stored fields, C{Content-Length},
        C{Age} (whole seconds, 5.1) and C{Cache-Status} with its C{ttl}.
        """
        answer = self.answer()
        self.assertEqual(
            (answer.head.status, answer.head.content_length, answer.body), (200, 10, b"0123456789")
        )
        self.assertEqual(
            answer.head.headers,
            (
                (b"Date", date()),
                (b"Cache-Control", b"max-age=60"),
                (b"ETag", b'"v1"'),
                (b"Content-Length", b"10"),
                (b"Age", b"12"),
                (b"Cache-Status", b"txproxy; hit; ttl=47"),
            ),
        )

    def test_head(self) -> None:
        """
        RFC 9110 9.3.2: a C{HEAD} gets the fields of the stored C{GET}, no body.
        """
        answer = self.answer(method=b"HEAD")
        self.assertEqual(
            (answer.head.status, answer.head.content_length, answer.body), (200, 10, b"")
        )
        self.assertIn((b"Content-Length", b"10"), answer.head.headers)

    def test_single_range(self) -> None:
        """
        RFC 9110 14.2: one byte range of a stored 200 is answered 206 with C{Content-Range}.
        """
        answer = self.answer((b"Range", b"bytes=2-4"))
        self.assertEqual(
            (answer.head.status, answer.head.content_length, answer.body), (206, 3, b"234")
        )
        self.assertIn((b"Content-Range", b"bytes 2-4/10"), answer.head.headers)
        self.assertIn((b"Content-Length", b"3"), answer.head.headers)

    def test_range_unsatisfiable(self) -> None:
        """
        RFC 9110 15.5.17: a range past the end is answered 416 with the length.
        """
        answer = self.answer((b"Range", b"bytes=10-"))
        self.assertEqual((answer.head.status, answer.body), (416, b""))
        self.assertIn((b"Content-Range", b"bytes */10"), answer.head.headers)

    def test_range_ignored(self) -> None:
        """
        RFC 9110 14.2: several ranges, a C{HEAD}, or an C{If-Range} that does
        not hold get the whole response.
        """
        self.assertEqual(self.answer((b"Range", b"bytes=0-1,4-5")).head.status, 200)
        self.assertEqual(self.answer((b"Range", b"bytes=0-1"), method=b"HEAD").head.status, 200)
        self.assertEqual(
            self.answer((b"Range", b"bytes=0-1"), (b"If-Range", b'"v2"')).head.status, 200
        )
        self.assertEqual(
            self.answer((b"Range", b"bytes=0-1"), (b"If-Range", b'W/"v1"')).head.status, 200
        )
        self.assertEqual(
            self.answer((b"Range", b"bytes=0-1"), (b"If-Range", b'"v1"')).head.status, 206
        )

    def test_if_range_date(self) -> None:
        """
        RFC 9110 13.1.5: an C{If-Range} date must equal C{Last-Modified}.
        """
        entry = stored(((b"Cache-Control", b"max-age=60"), (b"Last-Modified", date(-9))), b"abc")
        ranged = request(((b"Range", b"bytes=1-"), (b"If-Range", date(-9))))
        self.assertEqual(CachePolicy().answer(entry, ranged, T0, CacheStatus()).body, b"bc")
        later = request(((b"Range", b"bytes=1-"), (b"If-Range", date(-8))))
        self.assertEqual(CachePolicy().answer(entry, later, T0, CacheStatus()).body, b"abc")

    def test_no_content(self) -> None:
        """
        RFC 9110 8.6: a stored 204 is answered without C{Content-Length}.
        """
        entry = stored(((b"Cache-Control", b"max-age=60"),), b"", status=204)
        answer = CachePolicy().answer(entry, request(), T0, CacheStatus(hit=True))
        self.assertEqual(answer.head.status, 204)
        self.assertNotIn(b"content-length", [name.lower() for name, _ in answer.head.headers])


@frozen
class RangeRow(_Named):
    """
    A C{Range} value, a body length, and what L{byte_range} reads.
    """

    value: bytes
    length: int
    expected: tuple[int, int] | Unsatisfiable | None


RANGES = [
    RangeRow("range_closed", "bytes=0-4 is the first five bytes.", b"bytes=0-4", 10, (0, 4)),
    RangeRow("range_open", "bytes=7- runs to the end.", b"bytes=7-", 10, (7, 9)),
    RangeRow("range_suffix", "bytes=-3 is the last three bytes.", b"bytes=-3", 10, (7, 9)),
    RangeRow(
        "range_suffix_long", "A suffix longer than the body is all of it.", b"bytes=-30", 10, (0, 9)
    ),
    RangeRow(
        "range_clipped", "A last position past the end is clipped.", b"bytes=5-99", 10, (5, 9)
    ),
    RangeRow("range_unit_case", "The unit is case-insensitive.", b"Bytes = 1-1", 10, (1, 1)),
    RangeRow(
        "range_open_past_end",
        "An open range starting at the end is unsatisfiable.",
        b"bytes=10-",
        10,
        Unsatisfiable.UNSATISFIABLE,
    ),
    RangeRow(
        "range_past_end",
        "A first position past the end is unsatisfiable.",
        b"bytes=10-12",
        10,
        Unsatisfiable.UNSATISFIABLE,
    ),
    RangeRow(
        "range_zero_suffix",
        "A zero-length suffix is unsatisfiable.",
        b"bytes=-0",
        10,
        Unsatisfiable.UNSATISFIABLE,
    ),
    RangeRow(
        "range_backwards",
        "A last position before the first is invalid: ignored.",
        b"bytes=5-2",
        10,
        None,
    ),
    RangeRow("range_other_unit", "Another unit is ignored.", b"items=0-1", 10, None),
    RangeRow(
        "range_several",
        "Several ranges are ignored: the whole body is sent.",
        b"bytes=0-1, 3-4",
        10,
        None,
    ),
    RangeRow("range_garbage", "A syntax error is ignored.", b"bytes=a-b", 10, None),
    RangeRow("range_empty_body", "An empty body is sent whole.", b"bytes=0-", 0, None),
]


def check_range(case: SynchronousTestCase, row: RangeRow) -> None:
    """
    Assert what L{byte_range} reads of a row.
    """
    case.assertEqual(byte_range(row.value, row.length), row.expected)


@table(RANGES, check_range)
class ByteRangeTests(SynchronousTestCase):
    """
    RFC 9110 section 14.1.2, one row a form: L{byte_range}.
    """


# RFC 9111 section 4.2.4 and RFC 5861: stale on error


class StaleIfErrorTests(SynchronousTestCase):
    """
    Tests for serving stale responses when servers fail.
    """

    def lookup(
        self, cache_control: bytes, policy: CachePolicy, elapsed: float, request_cc: bytes = b""
    ) -> Lookup:
        """
        Store a response with C{cache_control} at L{T0} and look it up C{elapsed} seconds later.
        """
        self.store = CacheStore(10_000, 5000)
        self.store.put(URL, stored(_cc(cache_control)))
        headers: Headers = ((b"Cache-Control", request_cc),) if request_cc else ()
        return policy.lookup(self.store, b"http", request(headers), T0 + elapsed)

    def test_server_error_serves_stale(self) -> None:
        """
        RFC 5861 4: a 503 within the response's C{stale-if-error} serves the
        stale response, and C{Cache-Status} says so.
        """
        policy = CachePolicy()
        lookup = self.lookup(b"max-age=60, stale-if-error=100", policy, 120)
        decision = policy.on_response(
            self.store, lookup, request(), response((), status=503), T0 + 120, T0 + 120
        )
        self.assertEqual(decision.action, Action.SERVE)
        self.assertEqual(
            decision.status.value(), b"txproxy; fwd=stale; fwd-status=503; detail=stale-if-error"
        )
        assert decision.entry is not None
        answer = policy.answer(decision.entry, request(), T0 + 120, decision.status)
        self.assertIn(
            (
                b"Cache-Status",
                b"txproxy; fwd=stale; fwd-status=503; ttl=-60; detail=stale-if-error",
            ),
            answer.head.headers,
        )

    def test_window_past(self) -> None:
        """
        Past the window the error is forwarded.
        """
        policy = CachePolicy()
        lookup = self.lookup(b"max-age=60, stale-if-error=10", policy, 120)
        decision = policy.on_response(
            self.store, lookup, request(), response((), status=503), T0 + 120, T0 + 120
        )
        self.assertEqual(decision.action, Action.FORWARD)
        self.assertEqual(decision.status.stored, False)

    def test_not_found_is_not_an_error(self) -> None:
        """
        RFC 5861 4: only 500, 502, 503 and 504 count as errors.
        """
        policy = CachePolicy(stale_if_error=100)
        lookup = self.lookup(b"max-age=60", policy, 120)
        decision = policy.on_response(
            self.store, lookup, request(), response((), status=404), T0 + 120, T0 + 120
        )
        self.assertEqual(decision.action, Action.FORWARD)

    def test_no_server(self) -> None:
        """
        When no server answers, the configured window serves the stale response.
        """
        policy = CachePolicy(stale_if_error=100)
        lookup = self.lookup(b"max-age=60", policy, 120)
        self.assertEqual(
            policy.on_error(lookup, T0 + 120), CacheStatus(fwd="stale", detail="stale-if-error")
        )
        self.assertIsNone(policy.on_error(self.lookup(b"max-age=60", policy, 200), T0 + 200))
        self.assertIsNone(CachePolicy().on_error(self.lookup(b"max-age=60", policy, 120), T0 + 120))

    def test_forbidden(self) -> None:
        """
        RFC 9111 4.2.4: C{must-revalidate}, C{proxy-revalidate} and
        C{no-cache} forbid serving stale on error.
        """
        policy = CachePolicy(stale_if_error=100)
        for directive in (b"must-revalidate", b"proxy-revalidate", b"no-cache"):
            lookup = self.lookup(b"max-age=60, stale-if-error=100, " + directive, policy, 120)
            self.assertIsNone(policy.on_error(lookup, T0 + 120), directive)

    def test_request_stale_if_error(self) -> None:
        """
        RFC 5861 4: the client's own C{stale-if-error} allows it too.
        """
        policy = CachePolicy()
        lookup = self.lookup(b"max-age=60", policy, 120, request_cc=b"stale-if-error=100")
        self.assertIsNotNone(policy.on_error(lookup, T0 + 120))

    def test_fresh_served_on_error(self) -> None:
        """
        A fresh response revalidated because the client asked is served when the server fails.
        """
        policy = CachePolicy()
        lookup = self.lookup(b"max-age=60", policy, 10, request_cc=b"no-cache")
        self.assertEqual(lookup.outcome, Outcome.REVALIDATE)
        self.assertIsNotNone(policy.on_error(lookup, T0 + 10))

    def test_miss_has_nothing(self) -> None:
        """
        Without a stored response there is nothing to serve.
        """
        store = CacheStore(10_000, 5000)
        lookup = CachePolicy(stale_if_error=100).lookup(store, b"http", request(), T0)
        self.assertIsNone(CachePolicy(stale_if_error=100).on_error(lookup, T0))


class PolicyStorableTests(SynchronousTestCase):
    """
    Tests for L{CachePolicy.storable}: what may be stored and could be served.
    """

    def test_no_lifetime_no_validator(self) -> None:
        """
        A response that would never be fresh, has nothing to revalidate it
        with and may not be served stale is not stored.
        """
        policy = CachePolicy()
        for headers in ((), _cc(b"max-age=0"), _cc(b"max-age=60, no-cache")):
            self.assertEqual(
                policy.storable(request(), response(headers), T0), (False, "no-lifetime")
            )

    def test_could_be_served(self) -> None:
        """
        A lifetime, a validator, a heuristic lifetime or a window of
        C{stale-if-error} each make a response worth storing.
        """
        ok = (True, "")
        self.assertEqual(CachePolicy().storable(request(), response(_cc(b"max-age=5")), T0), ok)
        self.assertEqual(CachePolicy().storable(request(), response(((b"ETag", b'"1"'),)), T0), ok)
        self.assertEqual(CachePolicy(heuristic_limit=10).storable(request(), response(), T0), ok)
        self.assertEqual(CachePolicy(stale_if_error=10).storable(request(), response(), T0), ok)


# RFC 9111 section 4.4: invalidation


class InvalidationTests(SynchronousTestCase):
    """
    Tests for invalidation by unsafe methods.
    """

    def setUp(self) -> None:
        self.store = CacheStore(100_000, 10_000)
        self.policy = CachePolicy()
        for path in ("/a", "/b", "/c"):
            url = "http://example.com" + path
            self.store.put(url, stored(_cc(b"max-age=60"), url=url))

    def unsafe(self, method: bytes, status: int, headers: Headers = ()) -> ResponseDecision:
        """
        Send an unsafe request for C{/a} through the cache, answered with C{status}.
        """
        head = request(method=method, content_length=2)
        lookup = self.policy.lookup(self.store, b"http", head, T0)
        self.assertEqual(lookup.outcome, Outcome.BYPASS)
        return self.policy.on_response(
            self.store, lookup, head, response(headers, status=status), T0, T0
        )

    def test_target_invalidated(self) -> None:
        """
        RFC 9111 4.4: a 2xx to a C{POST} invalidates its URL.
        """
        decision = self.unsafe(b"POST", 200)
        self.assertEqual(decision.status.value(), b"txproxy; fwd=method; fwd-status=200")
        self.assertEqual(
            sorted(key for key, _ in self.store), ["http://example.com/b", "http://example.com/c"]
        )

    def test_locations_invalidated(self) -> None:
        """
        RFC 9111 4.4: C{Location} and C{Content-Location} of the same origin
        are invalidated too, relative references resolved.
        """
        self.unsafe(
            b"PUT", 201, ((b"Location", b"/b"), (b"Content-Location", b"http://example.com/c"))
        )
        self.assertEqual(len(self.store), 0)

    def test_other_origin_kept(self) -> None:
        """
        RFC 9111 4.4: a C{Location} of another host is not invalidated.
        """
        self.assertEqual(invalidated_urls(URL, ((b"Location", b"http://other.example/b"),)), [URL])
        self.assertEqual(invalidated_urls(URL, ((b"Location", b"https://example.com/b"),)), [URL])

    def test_error_invalidates_nothing(self) -> None:
        """
        RFC 9111 4.4: an error status invalidates nothing.
        """
        self.unsafe(b"DELETE", 500)
        self.unsafe(b"PATCH", 404)
        self.assertEqual(len(self.store), 3)

    def test_redirect_invalidates(self) -> None:
        """
        RFC 9111 4.4: a 3xx to an unsafe method invalidates.
        """
        self.unsafe(b"DELETE", 303)
        self.assertEqual(len(self.store), 2)


# RFC 9211: Cache-Status


class CacheStatusTests(SynchronousTestCase):
    """
    Tests for L{CacheStatus} and L{with_cache_status}.
    """

    def test_values(self) -> None:
        """
        Each parameter is serialised as RFC 9211 defines it: booleans bare
        when true and C{?0} when false, C{ttl} in whole seconds, rounded down.
        """
        cases = [
            (CacheStatus(hit=True, ttl=41.9), b"txproxy; hit; ttl=41"),
            (CacheStatus(hit=True, ttl=-0.5), b"txproxy; hit; ttl=-1"),
            (
                CacheStatus(fwd="uri-miss", fwd_status=200, stored=True),
                b"txproxy; fwd=uri-miss; fwd-status=200; stored",
            ),
            (
                CacheStatus(fwd="miss", fwd_status=200, stored=False, detail="private"),
                b"txproxy; fwd=miss; fwd-status=200; stored=?0; detail=private",
            ),
            (
                CacheStatus(fwd="stale", collapsed=False),
                b"txproxy; fwd=stale; collapsed=?0",
            ),
            (CacheStatus(detail="not a token"), b'txproxy; detail="not a token"'),
        ]
        for status, expected in cases:
            self.assertEqual(status.value(), expected)

    def test_appended_after_upstream(self) -> None:
        """
        RFC 9211 2: txproxy's member comes after those of caches nearer the server.
        """
        headers = ((b"Cache-Status", b"origin-cache; hit"), (b"X", b"1"))
        self.assertEqual(
            with_cache_status(headers, CacheStatus(hit=True)),
            (*headers, (b"Cache-Status", b"txproxy; hit")),
        )

    def test_round_trip_strings(self) -> None:
        """
        A miss stored and then hit says so at each step.
        """
        store = CacheStore(10_000, 5000)
        policy = CachePolicy()
        decision = fill(policy, store, request(), response(_cc(b"max-age=60")), b"x", T0)
        self.assertEqual(decision.status.value(), b"txproxy; fwd=uri-miss; fwd-status=200; stored")
        lookup = policy.lookup(store, b"http", request(), T0 + 20)
        assert lookup.entry is not None
        answer = policy.answer(lookup.entry, request(), T0 + 20, lookup.status)
        self.assertIn((b"Cache-Status", b"txproxy; hit; ttl=40"), answer.head.headers)

    def test_not_stored_says_why(self) -> None:
        """
        A response not stored says why in C{detail}.
        """
        decision = fill(
            CachePolicy(),
            CacheStore(10_000, 5000),
            request(),
            response(_cc(b"max-age=60, private")),
            b"x",
            T0,
        )
        self.assertEqual(
            decision.status.value(),
            b"txproxy; fwd=uri-miss; fwd-status=200; stored=?0; detail=private",
        )


# Keys and URLs


class KeyTests(SynchronousTestCase):
    """
    Tests for L{request_url}, L{normalise_url} and configured keys.
    """

    def test_request_url(self) -> None:
        """
        RFC 9111 2: the key is scheme, host and target, the scheme the
        listener's, host in lower case without its default port.
        """
        self.assertEqual(
            request_url(b"https", request(target=b"/a?b=1", host=b"Ex.COM:443")),
            "https://ex.com/a?b=1",
        )
        self.assertEqual(request_url(b"http", request(host=b"ex.com:8080")), "http://ex.com:8080/a")
        self.assertEqual(request_url(b"http", request(host=b"ex.com:443")), "http://ex.com:443/a")
        self.assertIsNone(request_url(b"http", request(method=b"OPTIONS", target=b"*")))

    def test_normalise_url(self) -> None:
        """
        Purge URLs are normalised as keys are.
        """
        self.assertEqual(normalise_url("HTTPS://Ex.com:443/A?B"), "https://ex.com/A?B")
        self.assertEqual(normalise_url("http://ex.com:80"), "http://ex.com")
        self.assertEqual(normalise_url("http://ex.com:8"), "http://ex.com:8")

    def test_scheme_in_key(self) -> None:
        """
        The same path over http and https is stored apart.
        """
        store = CacheStore(10_000, 5000)
        policy = CachePolicy()
        fill(policy, store, request(), response(_cc(b"max-age=60")), b"x", T0)
        self.assertEqual(policy.lookup(store, b"https", request(), T0).outcome, Outcome.MISS)
        self.assertEqual(policy.lookup(store, b"http", request(), T0).outcome, Outcome.HIT)

    def test_key_function(self) -> None:
        """
        A configured key function is given the URL and head, and what it
        returns is the key.
        """
        seen: list[tuple[str, bytes]] = []

        def key(url: str, head: RequestHead) -> str:
            seen.append((url, head.target))
            return url.partition("?")[0]

        policy = CachePolicy(key_function=key)
        store = CacheStore(10_000, 5000)
        fill(policy, store, request(target=b"/a?x=1"), response(_cc(b"max-age=60")), b"x", T0)
        lookup = policy.lookup(store, b"http", request(target=b"/a?x=2"), T0)
        self.assertEqual(lookup.outcome, Outcome.HIT)
        self.assertEqual(seen[-1], ("http://example.com/a?x=2", b"/a?x=2"))

    def test_key_function_fails(self) -> None:
        """
        A key function that raises, or returns no C{str}, leaves the request
        uncached, and the failure is logged.
        """

        def broken(url: str, head: RequestHead) -> str:
            raise ZeroDivisionError()

        store = CacheStore(10_000, 5000)
        lookup = CachePolicy(key_function=broken).lookup(store, b"http", request(), T0)
        self.assertEqual((lookup.outcome, lookup.status.fwd), (Outcome.BYPASS, "bypass"))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        wrong = CachePolicy(key_function=lambda url, head: None)  # type: ignore[arg-type,return-value]
        self.assertEqual(wrong.lookup(store, b"http", request(), T0).outcome, Outcome.BYPASS)


# Request collapsing


class PendingFillsTests(SynchronousTestCase):
    """
    Tests for L{PendingFills}.
    """

    def test_one_leads(self) -> None:
        """
        The first to claim a key leads; the others wait and are handed back,
        in order, when the fill settles; the key is then free again.
        """
        pending: PendingFills[str] = PendingFills()
        self.assertTrue(pending.lead(URL))
        self.assertFalse(pending.lead(URL))
        pending.wait(URL, "b")
        pending.wait(URL, "c")
        self.assertTrue(pending.filling(URL))
        self.assertEqual(pending.settle(URL), ["b", "c"])
        self.assertFalse(pending.filling(URL))
        self.assertTrue(pending.lead(URL))

    def test_leave(self) -> None:
        """
        A waiter that times out leaves and is not handed back.
        """
        pending: PendingFills[str] = PendingFills()
        pending.lead(URL)
        pending.wait(URL, "b")
        self.assertTrue(pending.leave(URL, "b"))
        self.assertFalse(pending.leave(URL, "b"))
        self.assertEqual(pending.settle(URL), [])

    def test_wait_needs_fill(self) -> None:
        """
        Waiting for a key nobody fills is a mistake of the caller.
        """
        pending: PendingFills[str] = PendingFills()
        self.assertRaises(KeyError, pending.wait, URL, "a")
        self.assertEqual(pending.settle(URL), [])
