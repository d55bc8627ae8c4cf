# -*- test-case-name: tests.test_http_headers -*-
"""
The header policy of forwarding: hop-by-hop removal, X-Forwarded-*, Via and a route's edits.
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import Factory, field, frozen

from txproxy.http.events import Headers, RequestHead, ResponseHead

__all__ = [
    "HIDDEN_RESPONSE_HEADERS",
    "HOP_BY_HOP",
    "HeaderEdits",
    "forward_request_headers",
    "forward_response_headers",
    "header_value",
]

# RFC 9110 7.6.1 names Connection, Proxy-Connection, Keep-Alive, TE,
# Transfer-Encoding and Upgrade; RFC 2616 13.5.1 adds Trailer; the Proxy-*
# credentials belong to the hop that asked for them (RFC 9110 11.7.1, 11.7.2).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
"""
The names, in lower case, of the fields that describe one connection and are never forwarded.
"""

HIDDEN_RESPONSE_HEADERS = frozenset(
    {
        b"server",
        b"x-powered-by",
        b"x-aspnet-version",
        b"x-aspnetmvc-version",
        b"x-backend-server",
        b"x-generator",
    }
)
"""
The names, in lower case, of response fields that name a server's software or
host; removed from responses unless a route keeps them.
"""

_FORWARDED_FOR = b"x-forwarded-for"
_VIA = b"via"
_CONNECTION = b"connection"
_UPGRADE = b"upgrade"

# Connection options may name any field (RFC 9110 7.6.1), but removing these
# would change how the message is routed or framed: a client could smuggle a
# body past the proxy by naming Content-Length.
_NEVER_NAMED = HOP_BY_HOP | {b"host", b"content-length"}

_REQUEST_DROPPED = HOP_BY_HOP | {
    _FORWARDED_FOR,
    b"x-forwarded-proto",
    b"x-forwarded-host",
    _VIA,
}
_RESPONSE_DROPPED = HOP_BY_HOP | {_VIA}
_RESPONSE_DROPPED_HIDDEN = _RESPONSE_DROPPED | HIDDEN_RESPONSE_HEADERS

# RFC 6455 4.1 compares the token case-insensitively, but some servers compare
# the value exactly, and clients send it capitalised.
_CONNECTION_UPGRADE = (b"Connection", b"Upgrade")

# RFC 9110 7.6.3: Via names the protocol the message was received with, and
# for HTTP only its version.
_VIA_VALUES = {b"1.1": b"1.1 txproxy", b"1.0": b"1.0 txproxy"}


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """
    Find the value of the first field named C{name}.

    @param headers: the fields to look in.
    @param name: the field name, in lower case.
    @return: the value, or L{None} when no field has that name.
    """
    for field_name, value in headers:
        if field_name.lower() == name:
            return value
    return None


@frozen
class HeaderEdits:
    """
    The header fields a route removes from and sets on forwarded messages.

    Setting a field replaces every field of that name, so that a client cannot
    add a value beside the route's.

    @ivar remove: the names of the fields removed, in lower case.
    @ivar set: the C{(name, value)} fields added after the others, replacing
        the fields of their names.
    """

    remove: frozenset[bytes] = frozenset()
    set: tuple[tuple[bytes, bytes], ...] = ()
    # The names of the fields apply() drops: those removed and those set. An
    # inline lambda because mypyc, which compiles this module, gets a default
    # made by a decorated method or by a module function wrong.
    _dropped: frozenset[bytes] = field(
        init=False,
        repr=False,
        eq=False,
        default=Factory(
            lambda edits: edits.remove | {name.lower() for name, _ in edits.set}, takes_self=True
        ),
    )

    @classmethod
    def from_config(cls, remove: Iterable[str], set: Iterable[tuple[str, str]]) -> HeaderEdits:
        """
        Make the edits of a route's configuration.

        Names are ASCII tokens, as the configuration checks; values are sent
        encoded as UTF-8.

        @param remove: the names of the fields to remove.
        @param set: the C{(name, value)} fields to set.
        """
        return cls(
            frozenset(name.lower().encode("ascii") for name in remove),
            tuple((name.encode("ascii"), value.encode("utf-8")) for name, value in set),
        )

    def over(self, listener: HeaderEdits) -> HeaderEdits:
        """
        These edits of a route on top of those of its listener: the removals
        of both, and the listener's fields set unless the route removes or
        sets fields of their names.
        """
        if not listener.remove and not listener.set:
            return self
        inherited = tuple(each for each in listener.set if each[0].lower() not in self._dropped)
        return HeaderEdits(self.remove | listener.remove, inherited + self.set)

    def apply(self, headers: Headers) -> Headers:
        """
        Remove and set fields, keeping the order of the fields left.

        @param headers: the fields to edit.
        @return: the edited fields; C{headers} itself when there are no edits.
        """
        dropped = self._dropped
        if not dropped:
            return headers
        kept = tuple(each for each in headers if each[0].lower() not in dropped)
        return kept + self.set


def _connection_options(values: list[bytes]) -> frozenset[bytes]:
    """
    The connection options of C{Connection} field values, in lower case.
    """
    options = set()
    for value in values:
        for option in value.split(b","):
            option = option.strip(b" \t").lower()
            if option:
                options.add(option)
    return frozenset(options)


def _forwardable(
    headers: Headers, dropped: frozenset[bytes], upgrade: bool
) -> tuple[list[tuple[bytes, bytes]], list[bytes], list[bytes]]:
    """
    Split off the fields that are not forwarded as they are.

    @param headers: the fields received.
    @param dropped: the names of the fields not forwarded as they are, in
        lower case; the values of C{X-Forwarded-For} and C{Via}, if named
        here, are returned to be extended.
    @param upgrade: whether the message switches protocols, which keeps the
        C{Upgrade} field and makes a C{Connection: Upgrade} one.
    @return: the fields forwarded as they are, in order, then the values of
        C{X-Forwarded-For} and of C{Via}, less any field the received
        C{Connection} fields name.
    """
    kept: list[tuple[bytes, bytes]] = []
    forwarded_for: list[bytes] = []
    via: list[bytes] = []
    connection: list[bytes] = []
    for each in headers:
        name = each[0].lower()
        if name not in dropped:
            kept.append(each)
        elif name == _CONNECTION:
            connection.append(each[1])
        elif name == _FORWARDED_FOR:
            if each[1]:
                forwarded_for.append(each[1])
        elif name == _VIA:
            if each[1]:
                via.append(each[1])
        elif upgrade and name == _UPGRADE:
            kept.append(each)
    if connection:
        # RFC 9110 7.6.1: remove each field a connection option names. Options
        # that name hop-by-hop fields, the usual case, are already gone.
        named = _connection_options(connection) - _NEVER_NAMED
        if named:
            kept = [each for each in kept if each[0].lower() not in named]
            if _FORWARDED_FOR in named:
                forwarded_for = []
            if _VIA in named:
                via = []
    if upgrade:
        kept.append(_CONNECTION_UPGRADE)
    return kept, forwarded_for, via


def _via(version: bytes, received: list[bytes]) -> tuple[bytes, bytes]:
    """
    The C{Via} field: the values received, then txproxy for this hop.
    """
    ours = _VIA_VALUES.get(version) or version + b" txproxy"
    if received:
        ours = b", ".join(received) + b", " + ours
    return (b"Via", ours)


def forward_request_headers(
    head: RequestHead, edits: HeaderEdits, client_ip: str, scheme: bytes
) -> Headers:
    """
    The header fields of a request as forwarded to a server.

    Hop-by-hop fields and those C{Connection} names are removed, except that an
    upgrade keeps C{Upgrade} with C{Connection: Upgrade}. C{Transfer-Encoding}
    goes too: the writer frames a chunked body itself. C{Host} and
    C{Content-Length} pass unchanged. C{X-Forwarded-For} gets the client
    appended, all received ones made one field; C{X-Forwarded-Proto} and
    C{X-Forwarded-Host} replace any the client sent; C{Via} gets this hop
    appended. The route's edits come last. Other fields keep their order; the
    fields made here follow them.

    @param head: the request received.
    @param edits: the route's request edits.
    @param client_ip: the client's address, without port or brackets.
    @param scheme: C{b"http"} or C{b"https"}, as the client spoke to txproxy.
    @return: the fields to send.
    """
    kept, forwarded_for, via = _forwardable(head.headers, _REQUEST_DROPPED, head.upgrade)
    client = client_ip.encode("ascii")
    if forwarded_for:
        client = b", ".join(forwarded_for) + b", " + client
    kept.append((b"X-Forwarded-For", client))
    kept.append((b"X-Forwarded-Proto", scheme))
    if head.host is not None:
        kept.append((b"X-Forwarded-Host", head.host))
    kept.append(_via(head.version, via))
    return edits.apply(tuple(kept))


def forward_response_headers(
    head: ResponseHead, edits: HeaderEdits, keep_server_headers: bool
) -> Headers:
    """
    The header fields of a response as forwarded to the client.

    Hop-by-hop fields and those C{Connection} names are removed, except that a
    101 keeps C{Upgrade} with C{Connection: Upgrade}; so are the fields of
    L{HIDDEN_RESPONSE_HEADERS} unless C{keep_server_headers}. C{Content-Length}
    passes unchanged. C{Via} gets this hop appended, and the route's edits
    come last.

    @param head: the response received.
    @param edits: the route's response edits.
    @param keep_server_headers: whether to keep the fields naming the server's
        software.
    @return: the fields to send.
    """
    dropped = _RESPONSE_DROPPED if keep_server_headers else _RESPONSE_DROPPED_HIDDEN
    kept, _, via = _forwardable(head.headers, dropped, head.status == 101)
    kept.append(_via(head.version, via))
    return edits.apply(tuple(kept))
