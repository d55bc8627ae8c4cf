# -*- test-case-name: tests.test_http_cache -*-
"""
The shared HTTP cache of RFC 9111: pure rules for what is stored and served, and a bounded store.

Nothing here reads a clock or touches a transport: times are passed in as
floats of seconds since the epoch (C{IReactorTime.seconds()}, which is wall
clock time for a real reactor, as C{Date} and C{Expires} need), so that every
rule can be tested with a fake clock.

An exchange drives the cache in three steps, each one call:

  1. L{CachePolicy.lookup} with the client's request head returns a
     L{Lookup}: its L{Outcome} says whether to answer from the store
     (C{HIT}), answer from it and revalidate in the background (C{STALE}),
     forward a conditional request (C{REVALIDATE}, with
     L{conditional_request_headers}), forward the request as it is (C{MISS},
     C{BYPASS}) or answer 504 (C{UNAVAILABLE}, for C{only-if-cached}).
  2. L{CachePolicy.on_response} with the response head the server sent
     returns a L{ResponseDecision}: forward the response (feeding its body to
     a L{ResponseFill} when it is being stored), serve a stored response
     instead (after a 304, or stale on a 5xx as C{stale-if-error} lets it),
     or send the request again without conditions. It also invalidates
     what an unsafe method changed (RFC 9111 4.4).
  3. L{CachePolicy.answer} turns a stored response into the head and body a
     client gets: C{Age}, C{Cache-Status}, and a 304 for a conditional
     request, a 206 for a single byte range, no body for C{HEAD}.

L{CacheStore} holds the responses: every variant of every key in one LRU
order, never more bytes than its C{max_size}. L{PendingFills} lets requests
for the same key wait for one fill instead of each going to a server.
"""

from __future__ import annotations

import calendar
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from email.utils import formatdate, parsedate_tz
from enum import Enum
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar
from urllib.parse import urljoin, urlsplit

from attrs import evolve, field, frozen
from twisted.logger import Logger
from zope.interface import implementer

from txproxy.http.events import Headers, RequestHead, ResponseHead
from txproxy.http.headers import HOP_BY_HOP
from txproxy.interfaces import ICachePurge

if TYPE_CHECKING:
    from txproxy.config import Cache

__all__ = [
    "CACHE_NAME",
    "ENTRY_OVERHEAD",
    "HEURISTIC_STATUSES",
    "UNDERSTOOD_STATUSES",
    "VaryKey",
    "Action",
    "CacheControl",
    "CacheKey",
    "CachePolicy",
    "CacheStatus",
    "CacheStore",
    "CachedAnswer",
    "CachedResponse",
    "CombinedPurge",
    "Lookup",
    "Outcome",
    "PendingFills",
    "ResponseDecision",
    "ResponseFill",
    "Unsatisfiable",
    "answers_conditionally",
    "byte_range",
    "conditional_headers",
    "conditional_request_headers",
    "current_age",
    "freshen",
    "freshness_lifetime",
    "initial_age",
    "invalidated_urls",
    "normalise_url",
    "parse_cache_control",
    "parse_http_date",
    "request_url",
    "select_variant",
    "storable",
    "vary_key",
    "with_cache_status",
]

CACHE_NAME = b"txproxy"
"""
The name txproxy gives itself in C{Cache-Status} (RFC 9211 section 2).
"""

# RFC 9111 section 1.2.2: a delta-seconds too large to hold is this.
_MAX_DELTA = 2**31

# RFC 9110 section 15.1: the statuses a cache may give heuristic freshness.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
"""
The statuses that are heuristically cacheable (RFC 9110 section 15.1).
"""

UNDERSTOOD_STATUSES = frozenset(
    {200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 307, 308}
    | set(range(400, 418))
    | {421, 422, 426, 500, 501, 502, 503, 504, 505}
)
"""
The final statuses whose caching rules txproxy knows (those RFC 9110 defines,
less 206 and 304, which it never stores): what C{must-understand} (RFC 9111
section 5.2.2.3) asks of a cache.
"""

# RFC 9110 section 9.2.1.
_SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})
_LOOKUP_METHODS = frozenset({b"GET", b"HEAD"})

# RFC 5861 section 4: the errors stale-if-error covers.
_ERROR_STATUSES = frozenset({500, 502, 503, 504})

# RFC 9111 section 3.1: fields a cache does not store. Content-Length is made
# anew for each answer; Age is replaced (section 4); Cache-Status described
# the upstream's handling of another request (RFC 9211).
_NOT_STORED = HOP_BY_HOP | {b"content-length", b"age", b"cache-status"}

# RFC 9110 section 13.1: the preconditions a cache replaces with its own
# when it revalidates, and Range, which would ask for part of the response
# the cache is about to store.
_CONDITIONAL = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since", b"if-range"}
)
_NOT_REVALIDATED = _CONDITIONAL | {b"range"}

# RFC 9110 section 15.4.5: what a 304 carries of the 200 it stands for.
_NOT_MODIFIED_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"}
)

# An estimate of the bytes an entry costs beyond its fields and body: the
# Python objects holding them. It keeps a store of many tiny responses from
# holding far more memory than its max_size says.
ENTRY_OVERHEAD = 256

_OWS = b" \t"

# The longest Cache-Control value whose parse is memoised.
_MEMO_LIMIT = 256

VaryKey = tuple[tuple[bytes, bytes | None], ...]
"""
The request fields a response varies on: C{(name, normalised value)} pairs,
names in lower case and sorted, L{None} for a field the request did not send.
"""

CacheKey = Callable[[str, RequestHead], str]
"""
A configured cache key: given the normalised URL of a request and its head,
the key its responses are stored under.
"""

# Parsing


def _delta_seconds(value: bytes | None) -> int | None:
    """
    Read a delta-seconds (RFC 9111 section 1.2.2), or L{None} if it is not one.
    """
    if value is None:
        return None
    value = value.strip(b'"')
    if not value.isdigit():
        return None
    return min(int(value), _MAX_DELTA)


@frozen
class CacheControl:
    """
    The C{Cache-Control} directives of a request or a response (RFC 9111
    section 5.2), the first occurrence of each.

    A directive with an invalid argument counts as its most restrictive
    reading (RFC 9111 section 4.2.1): an invalid C{max-age} or C{s-maxage} is
    0, so the response is stale; an invalid C{max-stale}, C{min-fresh} or
    C{stale-*} is ignored.

    @ivar max_age: C{max-age} in seconds.
    @ivar s_maxage: C{s-maxage} in seconds (responses).
    @ivar max_stale: C{max-stale} in seconds, C{2**31} when it has no argument
        (requests).
    @ivar min_fresh: C{min-fresh} in seconds (requests).
    @ivar stale_while_revalidate: C{stale-while-revalidate} in seconds (RFC 5861).
    @ivar stale_if_error: C{stale-if-error} in seconds (RFC 5861).
    @ivar no_store: C{no-store}.
    @ivar no_cache: an unqualified C{no-cache}.
    @ivar no_cache_fields: the field names, in lower case, of a qualified
        C{no-cache="..."}.
    @ivar private: an unqualified C{private}.
    @ivar private_fields: the field names, in lower case, of a qualified
        C{private="..."}.
    @ivar public: C{public}.
    @ivar must_revalidate: C{must-revalidate}.
    @ivar proxy_revalidate: C{proxy-revalidate}.
    @ivar must_understand: C{must-understand}.
    @ivar only_if_cached: C{only-if-cached} (requests).
    """

    max_age: int | None = None
    s_maxage: int | None = None
    max_stale: int | None = None
    min_fresh: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    no_store: bool = False
    no_cache: bool = False
    no_cache_fields: frozenset[bytes] = frozenset()
    private: bool = False
    private_fields: frozenset[bytes] = frozenset()
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    must_understand: bool = False
    only_if_cached: bool = False


_NO_DIRECTIVES = CacheControl()


def _split_directives(value: bytes) -> Iterator[tuple[bytes, bytes | None]]:
    """
    Split a C{Cache-Control} value into C{(lower-case name, argument)} pairs,
    the argument unquoted or L{None}.

    Commas inside a quoted-string (C{no-cache="a, b"}) do not split it.
    """
    if b'"' not in value:
        for part in value.split(b","):
            name, sign, argument = part.partition(b"=")
            name = name.strip(_OWS).lower()
            if name:
                yield name, (argument.strip(_OWS) if sign else None)
        return
    index, end = 0, len(value)
    while index < end:
        comma = value.find(b",", index)
        equals = value.find(b"=", index)
        if equals == -1 or -1 < comma < equals:
            stop = end if comma == -1 else comma
            name = value[index:stop].strip(_OWS).lower()
            if name:
                yield name, None
            index = stop + 1
            continue
        name = value[index:equals].strip(_OWS).lower()
        index = equals + 1
        while index < end and value[index : index + 1] in (b" ", b"\t"):
            index += 1
        if value[index : index + 1] == b'"':
            argument, index = _quoted_string(value, index)
            comma = value.find(b",", index)
            index = end if comma == -1 else comma + 1
        else:
            comma = value.find(b",", index)
            stop = end if comma == -1 else comma
            argument = value[index:stop].strip(_OWS)
            index = stop + 1
        if name:
            yield name, argument


def _quoted_string(value: bytes, start: int) -> tuple[bytes, int]:
    """
    Read the quoted-string starting at C{value[start]} (RFC 9110 section 5.6.4).

    @return: its content, with quoted-pairs undone, and the index after it.
    """
    content = bytearray()
    index, end = start + 1, len(value)
    while index < end:
        byte = value[index]
        if byte == 0x22:  # "
            return bytes(content), index + 1
        if byte == 0x5C and index + 1 < end:  # backslash
            index += 1
            byte = value[index]
        content.append(byte)
        index += 1
    return bytes(content), end


def _field_names(argument: bytes | None) -> frozenset[bytes]:
    """
    The field names of a qualified C{no-cache} or C{private}, in lower case.
    """
    if argument is None:
        return frozenset()
    return frozenset(name.strip(_OWS).lower() for name in argument.split(b",") if name.strip(_OWS))


def parse_cache_control(value: bytes) -> CacheControl:
    """
    Parse a C{Cache-Control} field value (RFC 9111 section 5.2).

    Directive names are case-insensitive and arguments may be tokens or
    quoted-strings (section 5.2). When a directive appears more than once the
    first counts (section 4.2.1); an unqualified C{no-cache} or C{private}
    wins over a qualified one, being more restrictive. Unknown directives are
    ignored (section 5.2.3).

    Results are cached by value: clients and servers send few distinct ones,
    so a request's directives cost a dictionary lookup. Long values, which
    no ordinary client sends, are parsed each time, so that a client cannot
    fill the memo with large ones.

    @param value: the field's value; several fields joined with C{b", "}.
    """
    if not value:
        return _NO_DIRECTIVES
    if len(value) > _MEMO_LIMIT:
        return _parse_cache_control(value)
    return _memo_cache_control(value)


def _parse_cache_control(value: bytes) -> CacheControl:
    """
    Parse a C{Cache-Control} value; see L{parse_cache_control}.
    """
    found: dict[bytes, bytes | None] = {}
    no_cache_fields: set[bytes] = set()
    private_fields: set[bytes] = set()
    for name, argument in _split_directives(value):
        if name == b"no-cache" and argument is not None:
            no_cache_fields |= _field_names(argument)
        elif name == b"private" and argument is not None:
            private_fields |= _field_names(argument)
        else:
            found.setdefault(name, argument)

    def strict_delta(name: bytes) -> int | None:
        # An invalid max-age or s-maxage makes the response stale.
        if name not in found:
            return None
        seconds = _delta_seconds(found[name])
        return 0 if seconds is None else seconds

    max_stale = None
    if b"max-stale" in found:
        argument = found[b"max-stale"]
        max_stale = _MAX_DELTA if argument is None else _delta_seconds(argument)
    return CacheControl(
        max_age=strict_delta(b"max-age"),
        s_maxage=strict_delta(b"s-maxage"),
        max_stale=max_stale,
        min_fresh=_delta_seconds(found.get(b"min-fresh")),
        stale_while_revalidate=_delta_seconds(found.get(b"stale-while-revalidate")),
        stale_if_error=_delta_seconds(found.get(b"stale-if-error")),
        no_store=b"no-store" in found,
        no_cache=b"no-cache" in found,
        no_cache_fields=frozenset(no_cache_fields),
        private=b"private" in found,
        private_fields=frozenset(private_fields),
        public=b"public" in found,
        must_revalidate=b"must-revalidate" in found,
        proxy_revalidate=b"proxy-revalidate" in found,
        must_understand=b"must-understand" in found,
        only_if_cached=b"only-if-cached" in found,
    )


_memo_cache_control = lru_cache(maxsize=1024)(_parse_cache_control)


@lru_cache(maxsize=1024)
def parse_http_date(value: bytes) -> float | None:
    """
    Parse an HTTP-date in any of the three forms of RFC 9110 section 5.6.7
    (IMF-fixdate, RFC 850, asctime), as seconds since the epoch.

    Results are cached by value, since a cache meets the same dates again
    and again; a value longer than any date is refused unread.

    @return: the time, or L{None} for a value that is not a date.
    """
    if len(value) > 64:
        return None
    try:
        parts = parsedate_tz(value.decode("ascii"))
        if parts is None:
            return None
        return float(calendar.timegm(parts[:6] + (0, 0, 0)) - (parts[9] or 0))
    except (UnicodeDecodeError, ValueError, OverflowError, TypeError, IndexError):
        return None


def _values(headers: Headers, name: bytes) -> list[bytes]:
    """
    The values of every field named C{name} (lower case), in order.
    """
    return [value for field_name, value in headers if field_name.lower() == name]


def _joined(headers: Headers, name: bytes) -> bytes:
    """
    The values of every field named C{name}, joined as one list (RFC 9110 section 5.3).
    """
    values = _values(headers, name)
    if len(values) == 1:
        return values[0]
    return b", ".join(values)


def _entity_tags(value: bytes) -> list[bytes] | None:
    """
    Read a list of entity-tags (RFC 9110 section 8.8.3), each with its C{W/}.

    @return: the tags, or L{None} for C{*}.
    """
    if value.strip(_OWS) == b"*":
        return None
    tags = []
    index, end = 0, len(value)
    while index < end:
        if value[index] in b" \t,":
            index += 1
            continue
        start = index
        if value.startswith(b"W/", index):
            index += 2
        close = value.find(b'"', index + 1) if value[index : index + 1] == b'"' else -1
        if close == -1:
            # Not an entity-tag: skip to the next list member.
            comma = value.find(b",", index)
            index = end if comma == -1 else comma + 1
            continue
        tags.append(value[start : close + 1])
        index = close + 1
    return tags


def _weak_match(first: bytes, second: bytes) -> bool:
    """
    Weak comparison of entity-tags (RFC 9110 section 8.8.3.2): equal opaque-tags.
    """
    return first.removeprefix(b"W/") == second.removeprefix(b"W/")


def _strong_match(first: bytes, second: bytes) -> bool:
    """
    Strong comparison of entity-tags (RFC 9110 section 8.8.3.2): both strong, and equal.
    """
    return first == second and not first.startswith(b"W/")


# URLs and keys


_DEFAULT_PORTS = {b"http": b":80", b"https": b":443"}


def request_url(scheme: bytes, head: RequestHead) -> str | None:
    """
    The URL a request targets (RFC 9110 section 7.1), normalised as RFC 3986
    section 6.2.2 allows: scheme and host in lower case, no default port.
    It is the default cache key (RFC 9111 section 2) and the name a response
    is purged by.

    The reader has turned absolute-form targets into origin-form and set
    C{host}; the scheme is the listener's, never one a client wrote, so that
    no client can file a response under another scheme.

    @param scheme: C{b"http"} or C{b"https"}, as the client spoke to txproxy.
    @return: the URL, or L{None} for a request that has none (asterisk-form,
        or HTTP/1.0 without C{Host}).
    """
    target = head.target
    host = head.host
    if target[:1] != b"/" or not host:
        return None
    host = host.lower()
    port = _DEFAULT_PORTS.get(scheme)
    if port is not None and host.endswith(port):
        host = host[: -len(port)]
    return (scheme + b"://" + host + target).decode("latin-1")


def normalise_url(url: str) -> str:
    """
    Normalise an absolute URL, or the start of one, as L{request_url} does:
    scheme and host in lower case, no default port.

    @raise ValueError: when C{url} is not an absolute C{http} or C{https} URL.
    """
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in ("http", "https"):
        raise ValueError(f"not an absolute http or https URL: {url!r}")
    authority_end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if found != -1:
            authority_end = min(authority_end, found)
    authority, path = rest[:authority_end].lower(), rest[authority_end:]
    default = ":80" if scheme == "http" else ":443"
    if authority.endswith(default) and (path or authority_end == len(rest)):
        authority = authority[: -len(default)]
    return f"{scheme}://{authority}{path}"


def invalidated_urls(url: str, response_headers: Headers) -> list[str]:
    """
    The URLs a successful unsafe request invalidates (RFC 9111 section 4.4):
    its own, and those of C{Location} and C{Content-Location} when they have
    the same scheme and host, so that one origin cannot evict another's
    responses.

    @param url: the request's URL, as L{request_url} made it.
    @param response_headers: the fields of the response, whose status the
        caller has checked is 2xx or 3xx.
    """
    urls = [url]
    origin = urlsplit(url)[:2]
    for name in (b"location", b"content-location"):
        for value in _values(response_headers, name):
            try:
                target = normalise_url(urljoin(url, value.decode("latin-1").strip()))
            except ValueError:
                continue
            if urlsplit(target)[:2] == origin and target not in urls:
                urls.append(target)
    return urls


# Vary


def _vary_names(values: list[bytes]) -> tuple[bytes, ...] | None:
    """
    The field names of C{Vary} values, lower case, sorted and each once; L{None} for C{*}.
    """
    names: set[bytes] = set()
    for value in values:
        for name in value.split(b","):
            name = name.strip(_OWS).lower()
            if name == b"*":
                return None
            if name:
                names.add(name)
    return tuple(sorted(names))


# RFC 9111 section 4.1 lets a cache normalise "in a way known to have
# identical semantics": content-codings are case-insensitive (RFC 9110 8.4.1).
_CASE_INSENSITIVE = frozenset({b"accept-encoding"})


def _normalised(name: bytes, values: list[bytes]) -> bytes:
    """
    Normalise a request's values of a field for comparison (RFC 9111 section
    4.1): field lines combined, the whitespace around list members and empty
    members removed.
    """
    joined = values[0] if len(values) == 1 else b",".join(values)
    members = [member.strip(_OWS) for member in joined.split(b",")]
    normal = b",".join(member for member in members if member)
    return normal.lower() if name in _CASE_INSENSITIVE else normal


def vary_key(names: Sequence[bytes], request_headers: Headers) -> VaryKey:
    """
    The values a request has for the fields a response varies on, normalised.

    @param names: the names, in lower case, as the response's C{Vary} gave them.
    @param request_headers: the request's fields.
    """
    if not names:
        return ()
    found: dict[bytes, list[bytes]] = {}
    for name, value in request_headers:
        lower = name.lower()
        if lower in names:
            found.setdefault(lower, []).append(value)
    return tuple(
        (name, _normalised(name, found[name]) if name in found else None) for name in names
    )


def select_variant(
    variants: Sequence[CachedResponse], request_headers: Headers
) -> CachedResponse | None:
    """
    Choose the stored response a request may be given (RFC 9111 section 4.1).

    A response matches when the request's values of every field its C{Vary}
    names equal, once normalised, those of the request that got it. Of
    several matches the most recent wins: C{variants} are most recent first,
    as L{CacheStore} keeps them. C{Vary: *} never matches: such responses are
    not stored.

    @return: the response, or L{None} when none matches.
    """
    keys: dict[tuple[bytes, ...], VaryKey] = {}
    for entry in variants:
        if not entry.vary:
            return entry
        names = entry.vary_names
        key = keys.get(names)
        if key is None:
            key = keys[names] = vary_key(names, request_headers)
        if key == entry.vary:
            return entry
    return None


# Stored responses


@frozen
class _Facts:
    """
    What the caching rules need of a response's fields, read in one pass.
    """

    directives: CacheControl
    date: float | None
    expires: float | None
    age: int
    etag: bytes | None
    last_modified: bytes | None
    vary: tuple[bytes, ...] | None
    set_cookie: bool
    connection: frozenset[bytes]

    @classmethod
    def of(cls, headers: Headers) -> _Facts:
        """
        Read the facts of C{headers}.
        """
        cache_control: list[bytes] = []
        vary: list[bytes] = []
        connection: set[bytes] = set()
        date = expires = age = etag = last_modified = None
        set_cookie = False
        for name, value in headers:
            name = name.lower()
            if name == b"cache-control":
                cache_control.append(value)
            elif name == b"date":
                date = value if date is None else date
            elif name == b"expires":
                expires = value if expires is None else expires
            elif name == b"age":
                age = value if age is None else age
            elif name == b"etag":
                etag = value.strip(_OWS) if etag is None else etag
            elif name == b"last-modified":
                last_modified = value.strip(_OWS) if last_modified is None else last_modified
            elif name == b"vary":
                vary.append(value)
            elif name == b"set-cookie":
                set_cookie = True
            elif name == b"connection":
                connection.update(
                    option.strip(_OWS).lower() for option in value.split(b",") if option
                )
        # RFC 9111 section 5.1: a list-valued Age counts by its first member;
        # an invalid one is ignored.
        age_value = _delta_seconds(age.split(b",")[0].strip(_OWS)) if age is not None else None
        expires_time = None
        if expires is not None:
            # RFC 9111 section 5.3: an invalid Expires, such as "0", is in the past.
            expires_time = parse_http_date(expires)
            if expires_time is None:
                expires_time = 0.0
        return cls(
            directives=parse_cache_control(b", ".join(cache_control)),
            date=parse_http_date(date) if date is not None else None,
            expires=expires_time,
            age=age_value or 0,
            etag=etag,
            last_modified=last_modified,
            vary=_vary_names(vary),
            set_cookie=set_cookie,
            connection=frozenset(connection),
        )


def _lifetime(status: int, facts: _Facts, response_time: float, heuristic_limit: float) -> float:
    """
    The freshness lifetime of a response, from facts already read; see
    L{freshness_lifetime}.
    """
    directives = facts.directives
    # RFC 9111 section 4.2.1, in order: s-maxage (shared caches only), max-age, Expires.
    if directives.s_maxage is not None:
        return float(directives.s_maxage)
    if directives.max_age is not None:
        return float(directives.max_age)
    date = facts.date if facts.date is not None else response_time
    if facts.expires is not None:
        return max(0.0, facts.expires - date)
    # RFC 9111 section 4.2.2: heuristics only without explicit expiration,
    # and only for heuristically cacheable statuses or public responses.
    if heuristic_limit <= 0 or not (status in HEURISTIC_STATUSES or directives.public):
        return 0.0
    if facts.last_modified is not None:
        modified = parse_http_date(facts.last_modified)
        # RFC 9110 section 8.8.2.1: a Last-Modified after Date is not to be trusted.
        if modified is not None and modified <= date:
            return min(heuristic_limit, (date - modified) / 10)
    return heuristic_limit


def freshness_lifetime(
    response: ResponseHead, response_time: float, heuristic_limit: float = 0.0
) -> float:
    """
    How long a response stays fresh in a shared cache (RFC 9111 section 4.2.1).

    C{s-maxage} wins, then C{max-age}, then C{Expires} minus C{Date} (the
    time of receipt when there is no C{Date}). Without any of them the
    lifetime is heuristic (section 4.2.2), only for a heuristically cacheable
    status (RFC 9110 section 15.1) or a C{public} response: a tenth of the
    time since C{Last-Modified}, as the section suggests, up to
    C{heuristic_limit}, or C{heuristic_limit} itself without a
    C{Last-Modified} (or with one later than C{Date}).

    @param response_time: when the response was received.
    @param heuristic_limit: the most seconds of heuristic freshness; 0 for
        none (the configuration's C{default_ttl}).
    @return: seconds.
    """
    return _lifetime(response.status, _Facts.of(response.headers), response_time, heuristic_limit)


def initial_age(
    age_value: float, date: float | None, request_time: float, response_time: float
) -> float:
    """
    The age of a response when it was received: C{corrected_initial_age} of
    RFC 9111 section 4.2.3.

    @param age_value: its C{Age} field, or 0.
    @param date: its C{Date}, or L{None} (then the apparent age is 0).
    @param request_time: when the request that got it was sent.
    @param response_time: when it was received.
    """
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    response_delay = response_time - request_time
    corrected_age_value = age_value + response_delay
    return max(apparent_age, corrected_age_value)


@frozen
class CachedResponse:
    """
    One stored response: one variant of one key.

    Everything the rules ask of it on the lookup path is worked out when it
    is stored, so that a hit costs arithmetic.

    @ivar url: the URL it answered, as L{request_url} made it; purges go by it.
    @ivar status: its status.
    @ivar reason: its reason phrase.
    @ivar headers: its fields as the server sent them, less those a cache does
        not store (hop-by-hop, C{Content-Length}, C{Age}, C{Cache-Status} and
        those a qualified C{no-cache} or C{private} names).
    @ivar body: its whole body.
    @ivar request_time: when the request that got it was sent.
    @ivar response_time: when it was received.
    @ivar vary: the request's values of the fields its C{Vary} names.
    @ivar directives: its C{Cache-Control}.
    @ivar lifetime: its freshness lifetime, in seconds (RFC 9111 section 4.2.1).
    @ivar initial_age: its age when received (RFC 9111 section 4.2.3).
    @ivar etag: its C{ETag}, or L{None}.
    @ivar last_modified: its C{Last-Modified}, or L{None}.
    @ivar size: the bytes it counts for in its store: body, fields, URL and
        L{ENTRY_OVERHEAD}.
    """

    url: str
    status: int
    reason: bytes
    headers: Headers
    body: bytes
    request_time: float
    response_time: float
    vary: VaryKey
    directives: CacheControl
    lifetime: float
    initial_age: float
    etag: bytes | None
    last_modified: bytes | None
    size: int
    # What L{CachePolicy.answer} sends of it whole, made once rather than per
    # hit: its fields with C{Content-Length} (none for a status without
    # content), and that length. Derived, so not compared or shown.
    _served_headers: Headers = field(init=False, eq=False, repr=False)
    _served_length: int | None = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if _no_body_status(self.status):
            served: Headers = tuple(self.headers)
            length = None
        else:
            length = len(self.body)
            served = (*self.headers, (b"Content-Length", b"%d" % length))
        object.__setattr__(self, "_served_headers", served)
        object.__setattr__(self, "_served_length", length)

    @classmethod
    def from_response(
        cls,
        url: str,
        request: RequestHead,
        response: ResponseHead,
        request_time: float,
        response_time: float,
        heuristic_limit: float = 0.0,
        body: bytes = b"",
    ) -> CachedResponse:
        """
        Make the stored form of a response.

        @param url: the request's URL.
        @param request: the request it answered, for its C{Vary} values.
        @param response: the response's head.
        @param request_time: when the request was sent to the server.
        @param response_time: when the response's head was received.
        @param heuristic_limit: the most seconds of heuristic freshness.
        @param body: its body.
        """
        facts = _Facts.of(response.headers)
        names = facts.vary or ()
        return cls._build(
            url,
            response.status,
            response.reason,
            _stored_headers(response.headers, facts, response_time),
            body,
            vary_key(names, request.headers),
            request_time,
            response_time,
            facts.age,
            heuristic_limit,
        )

    @classmethod
    def _build(
        cls,
        url: str,
        status: int,
        reason: bytes,
        headers: Headers,
        body: bytes,
        vary: VaryKey,
        request_time: float,
        response_time: float,
        age_value: int,
        heuristic_limit: float,
    ) -> CachedResponse:
        """
        Make a stored response from fields already filtered for storing.
        """
        facts = _Facts.of(headers)
        size = (
            ENTRY_OVERHEAD
            + len(body)
            + len(url)
            + len(reason)
            + sum(len(name) + len(value) + 4 for name, value in headers)
            + sum(len(name) + len(value or b"") for name, value in vary)
        )
        return cls(
            url=url,
            status=status,
            reason=reason,
            headers=headers,
            body=body,
            request_time=request_time,
            response_time=response_time,
            vary=vary,
            directives=facts.directives,
            lifetime=_lifetime(status, facts, response_time, heuristic_limit),
            initial_age=initial_age(age_value, facts.date, request_time, response_time),
            etag=facts.etag,
            last_modified=facts.last_modified,
            size=size,
        )

    @property
    def vary_names(self) -> tuple[bytes, ...]:
        """
        The names of the request fields it varies on.
        """
        return tuple(name for name, _ in self.vary)

    def age(self, now: float) -> float:
        """
        Its current age, in seconds (RFC 9111 section 4.2.3).
        """
        return self.initial_age + (now - self.response_time)

    def ttl(self, now: float) -> float:
        """
        The seconds it stays fresh from C{now}; negative once stale (RFC 9211's C{ttl}).
        """
        return self.lifetime - self.age(now)

    def is_fresh(self, now: float) -> bool:
        """
        Whether it may be served without validation (RFC 9111 section 4.2):
        younger than its lifetime, and not marked C{no-cache}, which asks for
        validation every time (section 5.2.2.4).
        """
        return not self.directives.no_cache and self.lifetime > self.age(now)


def current_age(entry: CachedResponse, now: float) -> float:
    """
    The current age of a stored response (RFC 9111 section 4.2.3): its age
    when received plus the time it has been stored.
    """
    return entry.age(now)


def _stored_headers(headers: Headers, facts: _Facts, received: float | None = None) -> Headers:
    """
    The fields of a response a cache keeps (RFC 9111 section 3.1): not the
    hop-by-hop ones or those C{Connection} names, nor those a qualified
    C{no-cache} (section 5.2.2.4) or C{private} (section 5.2.2.7) names, nor
    what is made anew for each answer.

    @param received: when the response was received: the C{Date} given to
        one without a valid one (RFC 9110 section 6.6.1), or L{None} to
        leave C{Date} as it is.
    """
    directives = facts.directives
    named = directives.no_cache_fields | directives.private_fields
    dropped = _NOT_STORED | facts.connection | named
    if received is not None and facts.date is None:
        # RFC 9110 section 6.6.1: an invalid Date may be replaced too.
        dropped = dropped | {b"date"}
    kept = tuple(each for each in headers if each[0].lower() not in dropped)
    if received is not None and facts.date is None:
        kept += ((b"Date", _http_date(received)),)
    return kept


def _http_date(when: float) -> bytes:
    """
    The IMF-fixdate of a time (RFC 9110 section 5.6.7).
    """
    return formatdate(when, usegmt=True).encode("ascii")


def storable(request: RequestHead, response: ResponseHead) -> tuple[bool, str]:
    """
    Whether a shared cache may store a response (RFC 9111 section 3), and why not.

    It may when the request is a C{GET} without C{no-store} (section
    5.2.1.5); the status is final and not 206 or 304 (txproxy stores
    neither partial responses nor combines them), and one it knows if
    C{must-understand} is given, which then overrides C{no-store} (section
    5.2.2.3); the response has no C{no-store} and no unqualified C{private};
    a request with C{Authorization} got C{public}, C{s-maxage} or
    C{must-revalidate} (section 3.5); the response does not vary on C{*};
    and something lets a cache keep it: C{public}, C{Expires}, C{max-age},
    C{s-maxage}, or a heuristically cacheable status.

    A response with C{Set-Cookie} is not stored either, unless a qualified
    C{no-cache} or C{private} names the field so that it is left out. RFC
    9111 section 7.3 says the field does not inhibit caching and leaves it to
    servers; a shared cache that replays one client's cookie to every other
    client is the leak that section warns of, so txproxy, like nginx and
    Varnish, errs the other way.

    @return: C{(True, "")}, or C{(False, reason)} with a token for
        C{Cache-Status}'s C{detail}.
    """
    return _storable(request, response, _Facts.of(response.headers))


def _storable(request: RequestHead, response: ResponseHead, facts: _Facts) -> tuple[bool, str]:
    """
    L{storable}, from facts already read.
    """
    if request.method != b"GET":
        return False, "method"
    status = response.status
    if status < 200 or status in (206, 304):
        return False, "status"
    directives = facts.directives
    if directives.must_understand:
        if status not in UNDERSTOOD_STATUSES:
            return False, "must-understand"
    elif directives.no_store:
        return False, "no-store"
    request_directives = parse_cache_control(_joined(request.headers, b"cache-control"))
    if request_directives.no_store:
        return False, "request-no-store"
    if directives.private:
        return False, "private"
    authorized = any(name.lower() == b"authorization" for name, _ in request.headers)
    if authorized and not (
        directives.public or directives.s_maxage is not None or directives.must_revalidate
    ):
        return False, "authorization"
    if facts.vary is None:
        return False, "vary-star"
    if facts.set_cookie and b"set-cookie" not in (
        directives.no_cache_fields | directives.private_fields
    ):
        return False, "set-cookie"
    if not (
        directives.public
        or facts.expires is not None
        or directives.max_age is not None
        or directives.s_maxage is not None
        or status in HEURISTIC_STATUSES
    ):
        return False, "not-cacheable"
    return True, ""


# Validation


def conditional_headers(entry: CachedResponse) -> Headers:
    """
    The preconditions that revalidate a stored response (RFC 9111 section
    4.3.1): C{If-None-Match} with its entity-tag and C{If-Modified-Since}
    with its C{Last-Modified}, whichever it has.
    """
    fields: list[tuple[bytes, bytes]] = []
    if entry.etag is not None:
        fields.append((b"If-None-Match", entry.etag))
    if entry.last_modified is not None:
        fields.append((b"If-Modified-Since", entry.last_modified))
    return tuple(fields)


def conditional_request_headers(headers: Headers, entry: CachedResponse) -> Headers:
    """
    The fields of a request forwarded to revalidate C{entry}: the client's
    preconditions and C{Range} replaced by the cache's own preconditions
    (RFC 9111 section 4.3.2 lets a cache validate with its own), so that the
    server answers 304 or a whole response the cache can store; the client's
    preconditions are then answered from the result by L{CachePolicy.answer}.

    @param headers: the fields to forward, as C{forward_request_headers} made them.
    """
    kept = tuple(each for each in headers if each[0].lower() not in _NOT_REVALIDATED)
    return kept + conditional_headers(entry)


def _selected_by(entry: CachedResponse, facts: _Facts) -> bool:
    """
    Whether a 304 identifies C{entry} as the response it freshens (RFC 9111
    section 4.3.4): by its strong entity-tag, else by its weak one, else by
    C{Last-Modified}; one with no validator selects the response validated.
    """
    if facts.etag is not None:
        if entry.etag is None:
            return False
        if facts.etag.startswith(b"W/"):
            return _weak_match(facts.etag, entry.etag)
        return _strong_match(facts.etag, entry.etag)
    if facts.last_modified is not None:
        return entry.last_modified == facts.last_modified
    return True


def freshen(
    entry: CachedResponse,
    response: ResponseHead,
    request_time: float,
    response_time: float,
    heuristic_limit: float = 0.0,
) -> CachedResponse | None:
    """
    Update a stored response with the 304 that validated it (RFC 9111
    sections 4.3.3 and 4.3.4).

    Each field of the 304 replaces the stored fields of its name (section
    3.2), except those a cache does not store; C{Content-Length} stays. The
    304's C{Date} and C{Age} and the times of its exchange restart the
    response's age, and its lifetime is worked out anew.

    @param entry: the stored response that was revalidated.
    @param response: the 304.
    @param request_time: when the conditional request was sent.
    @param response_time: when the 304 was received.
    @param heuristic_limit: the most seconds of heuristic freshness.
    @return: the updated response, or L{None} when the 304's validators
        select another response, which section 4.3.4 forbids updating with it.
    """
    facts = _Facts.of(response.headers)
    if not _selected_by(entry, facts):
        return None
    # Without a Date of its own the 304 gets one: else the stored Date
    # would leave the response as old as before.
    new = _stored_headers(response.headers, facts, response_time)
    replaced = {name.lower() for name, _ in new}
    kept = tuple(each for each in entry.headers if each[0].lower() not in replaced)
    return CachedResponse._build(
        entry.url,
        entry.status,
        entry.reason,
        kept + new,
        entry.body,
        entry.vary,
        request_time,
        response_time,
        facts.age,
        heuristic_limit,
    )


def answers_conditionally(request: RequestHead, entry: CachedResponse) -> bool:
    """
    Whether a client's own preconditions let the cache answer 304 from
    C{entry} (RFC 9110 section 13.2.2).

    Preconditions apply only to C{GET} and C{HEAD} and to a stored 2xx
    (section 13.2.1). C{If-None-Match} is evaluated with weak comparison and
    C{*} matches; only without it is C{If-Modified-Since} evaluated, true
    when the response's C{Last-Modified} is not later than the date.
    """
    if request.method not in _LOOKUP_METHODS or not 200 <= entry.status < 300:
        return False
    if_none_match = _values(request.headers, b"if-none-match")
    if if_none_match:
        tags = _entity_tags(b",".join(if_none_match))
        if tags is None:
            return True
        return entry.etag is not None and any(_weak_match(tag, entry.etag) for tag in tags)
    if_modified_since = _values(request.headers, b"if-modified-since")
    # RFC 9110 section 13.1.3: one valid HTTP-date, or the field is ignored.
    if len(if_modified_since) != 1 or entry.last_modified is None:
        return False
    since = parse_http_date(if_modified_since[0])
    modified = parse_http_date(entry.last_modified)
    return since is not None and modified is not None and modified <= since


# Ranges


class Unsatisfiable(Enum):
    """
    The answer of L{byte_range} for a range that lies past the end of the body.
    """

    UNSATISFIABLE = "unsatisfiable"


def byte_range(value: bytes, length: int) -> tuple[int, int] | Unsatisfiable | None:
    """
    Read a C{Range} field that asks for one byte range of a body of
    C{length} bytes (RFC 9110 section 14.1.2).

    A field txproxy does not serve from the cache is ignored, as section
    14.2 lets a server do, so that the whole response is sent: another unit,
    several ranges, a syntax error, or an empty body.

    @return: the first and last byte positions, inclusive and within the
        body; L{Unsatisfiable.UNSATISFIABLE} when the range starts past the
        end (answered with 416); L{None} to ignore the field.
    """
    unit, equals, ranges = value.partition(b"=")
    if not equals or unit.strip(_OWS).lower() != b"bytes" or length <= 0:
        return None
    specs = [spec.strip(_OWS) for spec in ranges.split(b",")]
    specs = [spec for spec in specs if spec]
    if len(specs) != 1:
        return None
    first, dash, last = specs[0].partition(b"-")
    if not dash:
        return None
    if not first:
        if not last.isdigit():
            return None
        suffix = int(last)
        if suffix == 0:
            return Unsatisfiable.UNSATISFIABLE
        return max(0, length - suffix), length - 1
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= length:
        return Unsatisfiable.UNSATISFIABLE
    return start, min(int(last), length - 1) if last else length - 1


def _if_range_holds(request: RequestHead, entry: CachedResponse) -> bool:
    """
    Whether a request's C{If-Range}, if any, lets its C{Range} apply (RFC
    9110 section 13.1.5): an entity-tag must match strongly, a date must
    equal C{Last-Modified}.
    """
    values = _values(request.headers, b"if-range")
    if not values:
        return True
    if len(values) != 1:
        return False
    value = values[0].strip(_OWS)
    if value.startswith((b'"', b"W/")):
        return entry.etag is not None and _strong_match(value, entry.etag)
    if entry.last_modified is None:
        return False
    modified = parse_http_date(entry.last_modified)
    return modified is not None and parse_http_date(value) == modified


# Cache-Status


def _is_token(value: str) -> bool:
    """
    Whether C{value} is a structured-field token (RFC 8941 section 3.3.4).
    """
    return (
        bool(value)
        and (value[0].isascii() and value[0].isalpha() or value[0] == "*")
        and all(
            character.isascii() and (character.isalnum() or character in "!#$%&'*+-.^_`|~:/")
            for character in value
        )
    )


@frozen
class CacheStatus:
    """
    txproxy's member of a response's C{Cache-Status} field (RFC 9211): how the
    cache handled the request.

    @ivar hit: whether the response came from the cache without going to a server.
    @ivar fwd: why the request went to a server: C{uri-miss} (nothing stored
        for its key), C{vary-miss} (nothing for its C{Vary} values), C{miss},
        C{stale} (the stored response needed validation), C{request} (the
        request's own directives or form asked for it), C{method} or
        C{bypass} (the request is not one txproxy caches); L{None} for a hit.
    @ivar fwd_status: the status the server answered the forwarded request with.
    @ivar ttl: the freshness left to the response served, in seconds,
        negative when stale; L{None} for none.
    @ivar stored: whether the response forwarded is being stored; L{None}
        when nothing was forwarded. The cache decides as the head arrives,
        so a body that turns out larger than C{max_object} is dropped though
        C{stored} was said.
    @ivar collapsed: whether the request waited for another's fill and its
        answer came from it (C{True}), or had to go to a server after all
        (C{False}); L{None} when it did not wait.
    @ivar detail: a token saying more, such as why a response was not
        stored (C{no-store}, C{private}, C{set-cookie}...) or that a stale one
        was served (C{stale-while-revalidate}, C{stale-if-error}).
    """

    hit: bool = False
    fwd: str | None = None
    fwd_status: int | None = None
    ttl: float | None = None
    stored: bool | None = None
    collapsed: bool | None = None
    detail: str | None = None

    def with_ttl(self, ttl: float) -> CacheStatus:
        """
        The same status with C{ttl} set; cheaper than C{attrs.evolve} on the hit path.
        """
        return CacheStatus(
            self.hit, self.fwd, self.fwd_status, ttl, self.stored, self.collapsed, self.detail
        )

    def value(self) -> bytes:
        """
        Serialise it as one member of the C{Cache-Status} list, such as
        C{txproxy; hit; ttl=42} or C{txproxy; fwd=uri-miss; fwd-status=200; stored}.
        """
        parts = [CACHE_NAME]
        if self.hit:
            parts.append(b"hit")
        if self.fwd is not None:
            parts.append(b"fwd=" + self.fwd.encode("ascii"))
        if self.fwd_status is not None:
            parts.append(b"fwd-status=%d" % self.fwd_status)
        if self.ttl is not None:
            parts.append(b"ttl=%d" % math.floor(self.ttl))
        if self.stored is not None:
            parts.append(b"stored" if self.stored else b"stored=?0")
        if self.collapsed is not None:
            parts.append(b"collapsed" if self.collapsed else b"collapsed=?0")
        if self.detail is not None:
            if _is_token(self.detail):
                parts.append(b"detail=" + self.detail.encode("ascii"))
            else:
                quoted = self.detail.replace("\\", "\\\\").replace('"', '\\"')
                parts.append(b'detail="' + quoted.encode("ascii", "replace") + b'"')
        return b"; ".join(parts)


def with_cache_status(headers: Headers, status: CacheStatus) -> Headers:
    """
    Add txproxy's C{Cache-Status} member to a response's fields.

    Caches nearer the server listed themselves first (RFC 9211 section 2);
    a field line of its own after theirs is the last member of the combined
    list (RFC 9110 section 5.3), so their fields stay as they are.
    """
    return (*headers, (b"Cache-Status", status.value()))


# The store


@implementer(ICachePurge)
class CacheStore:
    """
    Stored responses in memory, bounded in bytes, evicting the least
    recently used variant first.

    Each key holds up to C{max_variants} responses that differ by their
    C{Vary} values, most recent first. Every variant has its own place in
    one LRU order; storing, selecting and freshening move it to the most
    recent end. Sizes are L{CachedResponse.size}: body, fields, URL and a
    fixed overhead. Storing evicts from the least recent end until the new
    response fits, so the store never holds more than C{max_size} bytes.

    It keeps no clock: what is fresh is for L{CachePolicy} to say.

    @ivar max_size: the most bytes it holds.
    @ivar max_object: the most bytes one response may count for.
    @ivar max_variants: the most responses one key holds; the least recent
        of a key is dropped for a new one, so that a response varying on a
        field with many values (C{User-Agent}) cannot make lookups slow.
    """

    def __init__(self, max_size: int, max_object: int, max_variants: int = 32) -> None:
        """
        @raise ValueError: unless C{0 < max_object <= max_size} and
            C{max_variants >= 1}.
        """
        if not 0 < max_object <= max_size or max_variants < 1:
            raise ValueError(
                f"need 0 < max_object ({max_object}) <= max_size ({max_size}) "
                f"and max_variants ({max_variants}) >= 1"
            )
        self.max_size = max_size
        self.max_object = max_object
        self.max_variants = max_variants
        self._variants: dict[str, list[CachedResponse]] = {}
        self._lru: OrderedDict[tuple[str, VaryKey], None] = OrderedDict()
        self._keys_by_url: dict[str, set[str]] = {}
        self._size = 0

    @property
    def size(self) -> int:
        """
        The bytes its responses count for.
        """
        return self._size

    def __len__(self) -> int:
        """
        How many responses it holds, every variant counted.
        """
        return len(self._lru)

    def variants(self, key: str) -> Sequence[CachedResponse]:
        """
        The responses stored for a key, most recent first, without touching
        the LRU order.
        """
        return self._variants.get(key, ())

    def get(self, key: str, request_headers: Headers) -> CachedResponse | None:
        """
        Select the response for a request (L{select_variant}) and mark it
        recently used.

        @return: the response, or L{None} when none is stored that matches.
        """
        variants = self._variants.get(key)
        if not variants:
            return None
        entry = select_variant(variants, request_headers)
        if entry is not None:
            self._lru.move_to_end((key, entry.vary))
        return entry

    def touch(self, key: str, entry: CachedResponse) -> None:
        """
        Mark a stored response recently used.
        """
        try:
            self._lru.move_to_end((key, entry.vary))
        except KeyError:
            pass

    def put(self, key: str, entry: CachedResponse) -> bool:
        """
        Store a response under a key, replacing the one with the same C{Vary}
        values, and evict least recently used responses until it fits.

        @return: whether it was stored: not when it is larger than C{max_object}.
        """
        if entry.size > self.max_object:
            return False
        self._remove_variant(key, entry.vary)
        existing = self._variants.get(key)
        while existing and len(existing) >= self.max_variants:
            self._remove_variant(key, existing[-1].vary)
        while self._size + entry.size > self.max_size:
            # Never empty here: max_object <= max_size.
            evicted_key, evicted_vary = next(iter(self._lru))
            self._remove_variant(evicted_key, evicted_vary)
        self._variants.setdefault(key, []).insert(0, entry)
        self._lru[key, entry.vary] = None
        self._keys_by_url.setdefault(entry.url, set()).add(key)
        self._size += entry.size
        return True

    def discard(self, key: str, entry: CachedResponse) -> bool:
        """
        Remove one stored response, if it is still the one stored for its
        key and C{Vary} values.

        @return: whether it was removed.
        """
        for stored in self._variants.get(key, ()):
            if stored is entry:
                self._remove_variant(key, entry.vary)
                return True
        return False

    def remove(self, key: str) -> int:
        """
        Remove every response stored for a key.

        @return: how many were removed.
        """
        variants = list(self._variants.get(key, ()))
        for entry in variants:
            self._remove_variant(key, entry.vary)
        return len(variants)

    def purge_url(self, url: str) -> int:
        """
        Remove every response stored for one absolute URL, every variant,
        under whatever key the configuration filed it.

        @raise ValueError: when C{url} is not an absolute http or https URL.
        """
        url = normalise_url(url)
        removed = 0
        for key in list(self._keys_by_url.get(url, ())):
            for entry in [each for each in self._variants.get(key, ()) if each.url == url]:
                self._remove_variant(key, entry.vary)
                removed += 1
        return removed

    def purge_prefix(self, prefix: str) -> int:
        """
        Remove every response stored for an absolute URL starting with
        C{prefix}, compared as strings after normalising scheme and host.

        @raise ValueError: when C{prefix} does not start an absolute http or https URL.
        """
        prefix = normalise_url(prefix)
        urls = [url for url in self._keys_by_url if url.startswith(prefix)]
        return sum(self.purge_url(url) for url in urls)

    def _remove_variant(self, key: str, vary: VaryKey) -> None:
        """
        Remove the response of a key with the given C{Vary} values, if stored,
        and forget the key and URL once nothing is stored for them.
        """
        variants = self._variants.get(key)
        if not variants:
            return
        index = next((index for index, each in enumerate(variants) if each.vary == vary), None)
        if index is None:
            return
        entry = variants.pop(index)
        del self._lru[key, vary]
        self._size -= entry.size
        if not variants:
            del self._variants[key]
        if not any(each.url == entry.url for each in variants):
            keys = self._keys_by_url.get(entry.url)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys_by_url[entry.url]

    def __iter__(self) -> Iterator[tuple[str, CachedResponse]]:
        """
        Every stored C{(key, response)}, least recently used first.
        """
        for key, vary in self._lru:
            for entry in self._variants[key]:
                if entry.vary == vary:
                    yield key, entry


@implementer(ICachePurge)
class CombinedPurge:
    """
    Purges several stores as one, for an admin API in front of routes with
    caches of their own.
    """

    def __init__(self, stores: Iterable[ICachePurge]) -> None:
        self._stores = tuple(stores)

    def purge_url(self, url: str) -> int:
        """
        Purge C{url} from every store; the count is the total.
        """
        return sum(store.purge_url(url) for store in self._stores)

    def purge_prefix(self, prefix: str) -> int:
        """
        Purge C{prefix} from every store; the count is the total.
        """
        return sum(store.purge_prefix(prefix) for store in self._stores)


class ResponseFill:
    """
    Collects the body of a response being stored as it streams to the
    client, and stores the response when it ends.

    The stream never waits for it: it copies chunks and gives up, dropping
    what it holds, as soon as the body would make the response larger than
    the store's C{max_object}.

    @ivar key: the key the response is stored under.
    """

    def __init__(
        self,
        store: CacheStore,
        key: str,
        prototype: CachedResponse,
        expected: int | None = None,
    ) -> None:
        """
        @param store: where the response goes.
        @param key: its key.
        @param prototype: the response with an empty body.
        @param expected: the body's C{Content-Length}, if it has one; a body
            that ends at another length is not stored (RFC 9111 section 3.3).
        """
        self._store = store
        self.key = key
        self._prototype = prototype
        self._expected = expected
        self._limit = store.max_object - prototype.size
        self._chunks: list[bytes] | None = [] if self._limit >= 0 else None
        self._length = 0

    @property
    def active(self) -> bool:
        """
        Whether it is still collecting: not given up, finished or abandoned.
        """
        return self._chunks is not None

    def feed(self, data: bytes) -> None:
        """
        Copy some of the body; give up once it is larger than allowed.
        """
        chunks = self._chunks
        if chunks is None:
            return
        self._length += len(data)
        if self._length > self._limit:
            self._chunks = None
            return
        chunks.append(data)

    def finish(self) -> CachedResponse | None:
        """
        The whole body has arrived: store the response.

        @return: the stored response, or L{None} when it was not stored.
        """
        chunks, self._chunks = self._chunks, None
        if chunks is None or self._expected is not None and self._length != self._expected:
            return None
        prototype = self._prototype
        entry = evolve(prototype, body=b"".join(chunks), size=prototype.size + self._length)
        return entry if self._store.put(self.key, entry) else None

    def abandon(self) -> None:
        """
        The response broke off: store nothing.
        """
        self._chunks = None


_Waiter = TypeVar("_Waiter")


class PendingFills(Generic[_Waiter]):
    """
    The keys being fetched from a server now, and the requests waiting for
    each: request collapsing, so that a burst of misses for one key sends
    one request to the servers.

    The exchange that finds a miss calls L{lead}: if it leads, it fetches and
    calls L{settle} however the fetch ends; if not, it L{wait}s, with a timer
    of C{collapse_timeout} that calls L{leave} and fetches for itself. Each
    waiter L{settle} returns looks the request up again (with
    C{collapsed=True}); one that still misses, because the response was not
    storable or varies, fetches for itself without waiting again.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, list[_Waiter]] = {}

    def filling(self, key: str) -> bool:
        """
        Whether a fetch for C{key} is under way.
        """
        return key in self._waiting

    def lead(self, key: str) -> bool:
        """
        Claim the fetch of C{key}.

        @return: C{True} when the caller is to fetch; C{False} when another
            fetch is under way, which the caller may L{wait} for.
        """
        if key in self._waiting:
            return False
        self._waiting[key] = []
        return True

    def wait(self, key: str, waiter: _Waiter) -> None:
        """
        Wait for the fetch of C{key} under way.

        @raise KeyError: when none is.
        """
        self._waiting[key].append(waiter)

    def leave(self, key: str, waiter: _Waiter) -> bool:
        """
        Stop waiting (the wait timed out, or the client left).

        @return: whether C{waiter} was waiting.
        """
        waiters = self._waiting.get(key)
        if waiters is None or waiter not in waiters:
            return False
        waiters.remove(waiter)
        return True

    def settle(self, key: str) -> list[_Waiter]:
        """
        End the fetch of C{key}, whether it stored a response or not.

        @return: the waiters, in the order they came, to look up again.
        """
        return self._waiting.pop(key, [])


# The policy


class Outcome(Enum):
    """
    What L{CachePolicy.lookup} found, and so what the exchange does.
    """

    HIT = "hit"
    """
    Answer from C{Lookup.entry} with L{CachePolicy.answer}; no server.
    """

    STALE = "stale"
    """
    Answer from C{Lookup.entry} now, and revalidate it in the background
    (C{stale-while-revalidate}), unless another fetch of the key is under
    way: a C{GET} with L{conditional_request_headers}, its response given to
    L{CachePolicy.on_response} with L{Lookup.as_get}.
    """

    REVALIDATE = "revalidate"
    """
    Forward the request with L{conditional_request_headers} for C{Lookup.entry}.
    """

    MISS = "miss"
    """
    Forward the request as it is; its response may be stored. Misses of one key may collapse.
    """

    BYPASS = "bypass"
    """
    Forward the request as it is; the cache neither answers nor stores, but
    a response to an unsafe method invalidates (pass it to L{CachePolicy.on_response}).
    """

    UNAVAILABLE = "unavailable"
    """
    The client asked for C{only-if-cached} and no usable response is stored:
    answer 504 (RFC 9111 section 5.2.1.7).
    """


@frozen
class Lookup:
    """
    What L{CachePolicy.lookup} found for one request.

    @ivar outcome: what to do.
    @ivar url: the request's URL, or L{None} when it has none.
    @ivar key: the key its responses are stored under, or L{None} when it
        is not cached.
    @ivar entry: the stored response found (C{HIT}, C{STALE}, C{REVALIDATE}).
    @ivar status: the C{Cache-Status} so far; L{CachePolicy.on_response} adds
        what the server answered.
    @ivar directives: the request's C{Cache-Control}.
    @ivar method: the request's method.
    """

    outcome: Outcome
    url: str | None
    key: str | None
    entry: CachedResponse | None
    status: CacheStatus
    directives: CacheControl = _NO_DIRECTIVES
    method: bytes = b"GET"

    @property
    def validating(self) -> bool:
        """
        Whether the request forwarded validates C{entry}.
        """
        return self.outcome in (Outcome.REVALIDATE, Outcome.STALE)

    @property
    def may_store(self) -> bool:
        """
        Whether the response may be stored: a C{GET} looked up, without C{no-store}.
        """
        return (
            self.key is not None
            and self.method == b"GET"
            and self.outcome in (Outcome.MISS, Outcome.REVALIDATE, Outcome.STALE)
            and not self.directives.no_store
        )

    def as_get(self) -> Lookup:
        """
        This lookup for a C{GET} of the same URL: what a background
        revalidation (C{STALE}) of a C{HEAD} sends, so that a whole response
        may be stored.
        """
        return evolve(self, method=b"GET")

    def as_miss(self) -> Lookup:
        """
        This lookup as a miss: for the request sent again, without the
        cache's preconditions, after L{Action.REFETCH}.
        """
        return evolve(self, outcome=Outcome.MISS, entry=None, status=CacheStatus(fwd="miss"))


class Action(Enum):
    """
    What the exchange does with a response from a server.
    """

    FORWARD = "forward"
    """
    Send the response on, with C{Cache-Status}; feed its body to the fill, if any.
    """

    SERVE = "serve"
    """
    Send L{CachePolicy.answer} for C{ResponseDecision.entry} instead; drop
    the server's body (a 304 has none).
    """

    REFETCH = "refetch"
    """
    A 304 validated another response than the one stored: send the request
    again as it came, without the cache's preconditions, and give its
    response to L{CachePolicy.on_response} with L{Lookup.as_miss}.
    """


@frozen
class ResponseDecision:
    """
    What L{CachePolicy.on_response} decided for a response.

    @ivar action: what to do with it.
    @ivar status: the C{Cache-Status} member for what the client gets.
    @ivar entry: the stored response to serve (C{SERVE}).
    @ivar fill: for C{FORWARD}, the fill to feed the body to when the
        response is being stored: L{ResponseFill.feed} each chunk,
        L{ResponseFill.finish} at its end, L{ResponseFill.abandon} if it
        breaks off.
    """

    action: Action
    status: CacheStatus
    entry: CachedResponse | None = None
    fill: ResponseFill | None = None


@frozen
class CachedAnswer:
    """
    A response made from the cache for one request.

    @ivar head: its head, with C{Content-Length}, C{Age} and C{Cache-Status}
        among its fields; pass it through C{forward_response_headers} like a
        server's response.
    @ivar body: its body: empty for C{HEAD}, 304 and 416.
    """

    head: ResponseHead
    body: bytes


def _no_body_status(status: int) -> bool:
    """
    Whether a status never has content, so no C{Content-Length} is sent (RFC 9110 section 8.6).
    """
    return status < 200 or status in (204, 304)


@frozen
class CachePolicy:
    """
    The caching rules of one route: RFC 9111 and the route's C{Cache} settings.

    @ivar heuristic_limit: the most seconds of heuristic freshness (the
        configuration's C{default_ttl}); 0 for none.
    @ivar stale_while_revalidate: seconds past its lifetime a response may
        be served while it is revalidated, when the response allows it.
    @ivar stale_if_error: seconds past its lifetime a response may be served
        when the server fails, when the response allows it.
    @ivar key_function: the configured key, or L{None} for the URL.
    """

    heuristic_limit: float = 0.0
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    key_function: CacheKey | None = None

    _log: ClassVar[Logger] = Logger()

    @classmethod
    def from_config(cls, cache: Cache) -> CachePolicy:
        """
        The policy of a route's C{Cache} configuration.
        """
        return cls(
            heuristic_limit=cache.default_ttl,
            stale_while_revalidate=cache.stale_while_revalidate,
            stale_if_error=cache.stale_if_error,
            key_function=cache.key,
        )

    def cache_key(self, url: str, head: RequestHead) -> str | None:
        """
        The key a request's responses are stored under: its URL, or what the
        configured key function makes of it.

        @return: the key, or L{None} when the key function failed (logged),
            so that the request is not cached rather than cached wrongly.
        """
        function = self.key_function
        if function is None:
            return url
        try:
            key = function(url, head)
        except Exception:
            self._log.failure("cache key function failed for {url}", url=url)
            return None
        if not isinstance(key, str):
            self._log.error("cache key function returned {key!r} for {url}", key=key, url=url)
            return None
        return key

    def lookup(
        self,
        store: CacheStore,
        scheme: bytes,
        head: RequestHead,
        now: float,
        collapsed: bool = False,
    ) -> Lookup:
        """
        Find what the cache can do for a request (RFC 9111 section 4).

        A stored response is served when it is fresh (section 4.2) and the
        request's C{max-age}, C{min-fresh} and C{no-cache} accept it (section
        5.2.1); when stale, as the request's C{max-stale} allows, or while it
        is revalidated as C{stale-while-revalidate} allows (RFC 5861 section
        3); otherwise it is revalidated. Only C{GET} and C{HEAD} are looked
        up, and a C{HEAD} is answered from a stored C{GET} (RFC 9110 section
        9.3.2). Requests with content or with C{If-Match} or
        C{If-Unmodified-Since}, whose answers depend on the server's state,
        bypass the cache.

        @param scheme: C{b"http"} or C{b"https"}, as the client spoke to txproxy.
        @param head: the request as the client sent it.
        @param now: the current time.
        @param collapsed: whether the request has waited for another's fill
            (L{PendingFills}); it says so in C{Cache-Status}.
        """
        method = head.method
        url = request_url(scheme, head)
        if method not in _LOOKUP_METHODS:
            return Lookup(Outcome.BYPASS, url, None, None, _BY_METHOD, method=method)
        key = None if url is None else self.cache_key(url, head)
        if key is None:
            return Lookup(Outcome.BYPASS, url, None, None, _BYPASSED, method=method)
        cache_control: list[bytes] = []
        preconditioned = False
        for name, value in head.headers:
            name = name.lower()
            if name == b"cache-control":
                cache_control.append(value)
            elif name in (b"if-match", b"if-unmodified-since"):
                preconditioned = True
        directives = parse_cache_control(
            cache_control[0] if len(cache_control) == 1 else b", ".join(cache_control)
        )
        if head.has_body or preconditioned:
            return Lookup(Outcome.BYPASS, url, key, None, _BY_REQUEST, directives, method)
        variants = store.variants(key)
        entry = select_variant(variants, head.headers) if variants else None
        if entry is None:
            fwd = "vary-miss" if variants else "uri-miss"
            outcome = Outcome.UNAVAILABLE if directives.only_if_cached else Outcome.MISS
            status = CacheStatus(fwd=fwd, collapsed=False if collapsed else None)
            return Lookup(outcome, url, key, None, status, directives, method)
        store.touch(key, entry)
        age = entry.age(now)
        ttl = entry.lifetime - age
        fresh = ttl > 0 and not entry.directives.no_cache
        # RFC 9111 section 5.2.1: what the client asks of the response's age.
        validates = (
            directives.no_cache
            or (directives.max_age is not None and age > directives.max_age)
            or (directives.min_fresh is not None and ttl < directives.min_fresh)
        )
        outcome = Outcome.REVALIDATE
        status = _BY_REQUEST if fresh else _STALE
        if not validates:
            staleness = max(0.0, -ttl)
            if fresh:
                outcome, status = Outcome.HIT, _HIT
            elif _within(_client_stale_window(entry, directives, error=False), staleness):
                # RFC 9111 section 4.2.4: the client allows this much staleness.
                outcome, status = Outcome.HIT, _MAX_STALE
            elif _within(self._stale_window(entry, error=False), staleness):
                outcome, status = Outcome.STALE, _STALE_WHILE_REVALIDATE
        if outcome is Outcome.HIT and collapsed:
            status = CacheStatus(fwd="miss", fwd_status=entry.status, collapsed=True)
        elif outcome is Outcome.REVALIDATE:
            if directives.only_if_cached:
                outcome = Outcome.UNAVAILABLE
            if collapsed:
                status = evolve(status, collapsed=False)
        return Lookup(outcome, url, key, entry, status, directives, method)

    def storable(
        self, request: RequestHead, response: ResponseHead, response_time: float
    ) -> tuple[bool, str]:
        """
        Whether to store a response: L{storable} says the RFC allows it, and
        the response could ever be served: it has a freshness lifetime, or a
        validator to revalidate it with, or C{stale-if-error} may serve it.
        """
        return self._storable(request, response, _Facts.of(response.headers), response_time)

    def _storable(
        self, request: RequestHead, response: ResponseHead, facts: _Facts, response_time: float
    ) -> tuple[bool, str]:
        """
        L{storable}, from facts already read.
        """
        allowed, reason = _storable(request, response, facts)
        if not allowed:
            return allowed, reason
        if facts.etag is not None or facts.last_modified is not None:
            return True, ""
        directives = facts.directives
        lifetime = _lifetime(response.status, facts, response_time, self.heuristic_limit)
        if lifetime > 0 and not directives.no_cache:
            return True, ""
        if _stale_window(directives, self.stale_if_error, error=True) > 0:
            return True, ""
        return False, "no-lifetime"

    def _stale_window(self, entry: CachedResponse, error: bool) -> float:
        """
        How many seconds past its lifetime C{entry} may be served while it is
        revalidated, or on an error; see L{_stale_window}.
        """
        configured = self.stale_if_error if error else self.stale_while_revalidate
        return _stale_window(entry.directives, configured, error)

    def may_serve_stale(
        self, entry: CachedResponse, now: float, request: CacheControl, error: bool
    ) -> bool:
        """
        Whether C{entry} may be served now without a successful validation:
        while it is revalidated (C{error} false), or because the server
        failed (C{error} true).

        A fresh response may always be. A stale one may be within the
        response's C{stale-while-revalidate} or C{stale-if-error} (RFC 5861)
        or the configured window, or within the request's C{max-stale} or,
        on an error, its C{stale-if-error}; never when C{no-cache},
        C{must-revalidate} or C{proxy-revalidate} forbid it (RFC 9111
        section 4.2.4).
        """
        if entry.is_fresh(now):
            return True
        staleness = max(0.0, entry.age(now) - entry.lifetime)
        return _within(self._stale_window(entry, error), staleness) or _within(
            _client_stale_window(entry, request, error), staleness
        )

    def on_response(
        self,
        store: CacheStore,
        lookup: Lookup,
        request: RequestHead,
        response: ResponseHead,
        request_time: float,
        response_time: float,
    ) -> ResponseDecision:
        """
        Decide what becomes of a final response from a server.

        A 2xx or 3xx to an unsafe method invalidates what it changed (RFC
        9111 section 4.4). A 304 to a revalidation freshens the stored
        response (section 4.3.4), which is then served; a 500, 502, 503 or
        504 lets a stale one be served as C{stale-if-error} allows. Any other
        response is forwarded, and stored if L{storable} and the lookup
        allow, through the returned L{ResponseFill}; one that replaces a
        revalidated response which may no longer be stored removes it.

        @param lookup: what L{lookup} found for the request.
        @param request: the request as the client sent it.
        @param response: the response's head (not an interim 1xx).
        @param request_time: when the request was sent to the server.
        @param response_time: when the response's head was received.
        """
        code = response.status
        status = evolve(lookup.status, fwd_status=code)
        if request.method not in _SAFE_METHODS:
            if 200 <= code < 400 and lookup.url is not None:
                for url in invalidated_urls(lookup.url, response.headers):
                    store.purge_url(url)
            return ResponseDecision(Action.FORWARD, status)
        key = lookup.key
        entry = lookup.entry if lookup.validating else None
        if entry is not None and key is not None:
            if code == 304:
                fresh = freshen(entry, response, request_time, response_time, self.heuristic_limit)
                if fresh is None:
                    return ResponseDecision(
                        Action.REFETCH, evolve(status, detail="validator-mismatch")
                    )
                stored = self._still_storable(fresh) and store.put(key, fresh)
                if not stored:
                    store.discard(key, entry)
                return ResponseDecision(Action.SERVE, evolve(status, stored=stored), fresh)
            if code in _ERROR_STATUSES and self.may_serve_stale(
                entry, response_time, lookup.directives, error=True
            ):
                return ResponseDecision(
                    Action.SERVE, evolve(status, detail="stale-if-error"), entry
                )
            if code < 500:
                # RFC 9111 section 4.3.3: a full response supersedes the
                # stored one, whether it is stored in its place (perhaps as
                # another variant) or not at all.
                store.discard(key, entry)
        if not lookup.may_store or key is None or lookup.url is None:
            return ResponseDecision(Action.FORWARD, status)
        facts = _Facts.of(response.headers)
        allowed, reason = self._storable(request, response, facts, response_time)
        if not allowed:
            return ResponseDecision(Action.FORWARD, evolve(status, stored=False, detail=reason))
        prototype = CachedResponse._build(
            lookup.url,
            code,
            response.reason,
            _stored_headers(response.headers, facts, response_time),
            b"",
            vary_key(facts.vary or (), request.headers),
            request_time,
            response_time,
            facts.age,
            self.heuristic_limit,
        )
        length = response.content_length
        if prototype.size + (length or 0) > store.max_object:
            return ResponseDecision(
                Action.FORWARD, evolve(status, stored=False, detail="too-large")
            )
        fill = ResponseFill(store, key, prototype, length)
        return ResponseDecision(Action.FORWARD, evolve(status, stored=True), fill=fill)

    def _still_storable(self, entry: CachedResponse) -> bool:
        """
        Whether a freshened response may stay stored: the 304 may have
        brought C{no-store} or C{private}.
        """
        directives = entry.directives
        if directives.private:
            return False
        return not directives.no_store or directives.must_understand

    def on_error(self, lookup: Lookup, now: float) -> CacheStatus | None:
        """
        Decide whether a stored response answers a request no server could
        (txproxy's own 502, 503 or 504), as C{stale-if-error} allows (RFC 5861
        section 4).

        @return: the C{Cache-Status} to serve C{lookup.entry} with through
            L{answer}, or L{None} to answer with the error.
        """
        entry = lookup.entry
        if entry is None or not lookup.validating:
            return None
        if not self.may_serve_stale(entry, now, lookup.directives, error=True):
            return None
        return evolve(lookup.status, detail="stale-if-error")

    def answer(
        self, entry: CachedResponse, request: RequestHead, now: float, status: CacheStatus
    ) -> CachedAnswer:
        """
        Make the response a client gets from a stored one (RFC 9111 section 4).

        C{Age} is set to the response's current age (section 5.1) and
        C{Cache-Status} to C{status}, with its C{ttl} if not given. A client
        whose preconditions the response meets gets 304 (RFC 9110 section
        15.4.5: only the fields a 304 carries). A C{GET} of a stored 200 with
        one byte range gets 206 with that range, or 416 for a range past the
        end, unless C{If-Range} does not hold (RFC 9110 section 14.2). A
        C{HEAD} gets the C{GET}'s fields without its body.

        @param entry: the stored response.
        @param request: the client's request.
        @param now: the current time.
        @param status: the C{Cache-Status} from L{lookup} or L{on_response}.
        """
        age = entry.age(now)
        conditional = _has_conditions(request.headers)
        if status is _HIT and not conditional:
            # The usual hit: what status.with_ttl(ttl).value() would say.
            value = _HIT_TTL + b"%d" % math.floor(entry.lifetime - age)
        else:
            if status.ttl is None:
                status = status.with_ttl(entry.lifetime - age)
            value = status.value()
        added = ((b"Age", b"%d" % max(0, int(age))), (b"Cache-Status", value))
        if conditional:
            special = _conditional_answer(entry, request, status, added)
            if special is not None:
                return special
        length = entry._served_length
        head = ResponseHead(
            entry.status, entry.reason, b"1.1", entry._served_headers + added, length
        )
        if length is None or request.method == b"HEAD":
            return CachedAnswer(head, b"")
        return CachedAnswer(head, entry.body)


def _has_conditions(headers: Headers) -> bool:
    """
    Whether a request has a precondition (C{If-*}) or a C{Range}: one pass,
    so that the usual request, with neither, costs no more.
    """
    for name, _ in headers:
        if name[:1] in _CONDITION_INITIALS:
            name = name.lower()
            if name[:3] == b"if-" or name == b"range":
                return True
    return False


# The first letters of the names _has_conditions looks for, so that it lowers
# only the names that may be one.
_CONDITION_INITIALS = frozenset((b"i", b"I", b"r", b"R"))


def _conditional_answer(
    entry: CachedResponse,
    request: RequestHead,
    status: CacheStatus,
    added: tuple[tuple[bytes, bytes], ...],
) -> CachedAnswer | None:
    """
    The 304, 206 or 416 a request's preconditions or C{Range} make of a
    stored response; see L{CachePolicy.answer}.

    @param added: the C{Age} and C{Cache-Status} fields.
    @return: the answer, or L{None} for the whole response.
    """
    if answers_conditionally(request, entry):
        fields = _NOT_MODIFIED_FIELDS
        if entry.etag is None:
            # RFC 9110 section 15.4.5: what guides the cache's update.
            fields = fields | {b"last-modified"}
        headers = tuple(each for each in entry.headers if each[0].lower() in fields)
        return CachedAnswer(ResponseHead(304, b"Not Modified", b"1.1", headers + added), b"")
    if request.method != b"GET" or entry.status != 200:
        return None
    ranges = _values(request.headers, b"range")
    if len(ranges) != 1 or not _if_range_holds(request, entry):
        return None
    body = entry.body
    chosen = byte_range(ranges[0], len(body))
    if chosen is None:
        return None
    if chosen is Unsatisfiable.UNSATISFIABLE:
        headers = (
            (b"Content-Range", b"bytes */%d" % len(body)),
            (b"Content-Length", b"0"),
            (b"Cache-Status", status.value()),
        )
        return CachedAnswer(ResponseHead(416, b"Range Not Satisfiable", b"1.1", headers, 0), b"")
    first, last = chosen
    part = body[first : last + 1]
    headers = (
        *entry.headers,
        (b"Content-Range", b"bytes %d-%d/%d" % (first, last, len(body))),
        (b"Content-Length", b"%d" % len(part)),
        *added,
    )
    return CachedAnswer(ResponseHead(206, b"Partial Content", b"1.1", headers, len(part)), part)


_HIT = CacheStatus(hit=True)
_HIT_TTL = _HIT.value() + b"; ttl="
_BY_METHOD = CacheStatus(fwd="method")
_BYPASSED = CacheStatus(fwd="bypass")
_BY_REQUEST = CacheStatus(fwd="request")
_STALE = CacheStatus(fwd="stale")
_MAX_STALE = CacheStatus(hit=True, detail="max-stale")
_STALE_WHILE_REVALIDATE = CacheStatus(hit=True, detail="stale-while-revalidate")


def _within(window: float | None, staleness: float) -> bool:
    """
    Whether a response C{staleness} seconds stale is within a window of
    stale service; a window of L{None} or 0 allows none.
    """
    return window is not None and window > 0 and staleness <= window


def _stale_window(directives: CacheControl, configured: float, error: bool) -> float:
    """
    How many seconds past its lifetime a response with C{directives} may be
    served: while revalidated, or (C{error}) when the server fails.

    The response's own C{stale-while-revalidate} or C{stale-if-error} (RFC
    5861 sections 3 and 4) counts first, even beside C{s-maxage}, as CDNs
    read C{s-maxage=60, stale-while-revalidate=30}. Where the response says
    nothing the configured window applies, as the out-of-band agreement RFC
    9111 section 4.2.4 allows, but not to a response with C{s-maxage}, which
    implies C{proxy-revalidate} for a shared cache (section 5.2.2.10).
    C{no-cache}, C{must-revalidate} and C{proxy-revalidate} forbid any.
    """
    if _forbids_stale(directives):
        return 0.0
    given = directives.stale_if_error if error else directives.stale_while_revalidate
    if given is not None:
        return float(given)
    if directives.s_maxage is not None:
        return 0.0
    return configured


def _client_stale_window(entry: CachedResponse, request: CacheControl, error: bool) -> float | None:
    """
    How stale a client accepts a response: its C{max-stale} (RFC 9111
    section 5.2.1.2) or, on an error, its C{stale-if-error} (RFC 5861
    section 4); L{None} when it says nothing or the response forbids it.
    """
    if _forbids_stale(entry.directives):
        return None
    window = request.max_stale
    if error and request.stale_if_error is not None:
        window = max(window or 0, request.stale_if_error)
    return window


def _forbids_stale(directives: CacheControl) -> bool:
    """
    Whether a response's directives forbid serving it stale (RFC 9111
    section 4.2.4): C{no-cache}, C{must-revalidate} or C{proxy-revalidate}.
    """
    return directives.no_cache or directives.must_revalidate or directives.proxy_revalidate
