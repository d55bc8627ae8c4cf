# -*- test-case-name: tests.test_clienthello -*-
"""
Routing TLS by server name without decrypting it: the name in a ClientHello, and the pool it names.

Pure: bytes in, values out, with no reactor and no transport, so that the
relay (L{txproxy.tcp}) only moves bytes and keeps time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Generic, TypeVar

from attrs import frozen

__all__ = [
    "MAX_CLIENT_HELLO",
    "NEED_MORE",
    "ClientHello",
    "ClientHelloReader",
    "NeedMore",
    "NotClientHello",
    "PeekResult",
    "SNIRoutes",
]

MAX_CLIENT_HELLO = 65536
"""
The most bytes a L{ClientHelloReader} reads looking for a ClientHello.

Real ClientHellos are a few hundred bytes, about 1.5 KiB with a post-quantum
hybrid key share (X25519MLKEM768), a few KiB more with a resumption ticket:
far below this. Go's C{crypto/tls} refuses handshake messages over 64 KiB
(C{maxHandshake}), and nginx's C{ssl_preread} reads 16 KiB by default, so a
client that needs more is broken or hostile. It also bounds what the relay
holds for each client that has not yet been given a server.
"""

# RFC 8446 5.1 (and RFC 5246 6.2.1): a record's content type, and the most
# bytes its fragment may carry.
_HANDSHAKE_RECORD = 22
_MAX_FRAGMENT = 2**14
_RECORD_HEADER = 5
# RFC 8446 4: a handshake message's type and 24-bit length.
_CLIENT_HELLO = 1
_MESSAGE_HEADER = 4
# RFC 6066 3: the server_name extension, and its one name type.
_SERVER_NAME = 0
_HOST_NAME = 0
# The characters of a DNS name as config.py accepts them in patterns (letters,
# digits, "-" and "_"), with an optional trailing dot.
_LABEL = rb"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rb"(?:%s\.)*%s\.?" % (_LABEL, _LABEL))
_MAX_NAME = 254

_T = TypeVar("_T")


@frozen
class NeedMore:
    """
    The bytes so far are the start of a ClientHello: read more and feed them.
    """


NEED_MORE = NeedMore()
"""
The one L{NeedMore}.
"""


@frozen
class NotClientHello:
    """
    The client did not start with a TLS ClientHello that txproxy accepts.

    It may speak another protocol, send a malformed or ambiguous ClientHello,
    or one over L{MAX_CLIENT_HELLO}: its connection has no server name.

    @ivar reason: what was wrong, for logs.
    """

    reason: str


@frozen
class ClientHello:
    """
    A complete, well-formed TLS ClientHello.

    @ivar server_name: its SNI host name (RFC 6066 3), as sent: ASCII letters,
        digits, C{-} and C{_} in dot-separated labels, maybe with a trailing
        dot, in the client's case; L{None} when it has no SNI.
    """

    server_name: str | None


PeekResult = NeedMore | NotClientHello | ClientHello
"""
What L{ClientHelloReader.feed} found.
"""


class _Malformed(Exception):
    """
    A ClientHello breaks its grammar; caught within this module.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Cursor:
    """
    Reads the fields of a TLS structure (RFC 8446 3) front to back.

    Running short raises L{_Malformed}: a cursor is only made over a whole
    message, so a short field is a lie about a length, not a partial read.
    """

    __slots__ = ("_data", "_offset")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._offset = 0

    @property
    def at_end(self) -> bool:
        """
        Whether every byte has been read.
        """
        return self._offset == len(self._data)

    def take(self, size: int, what: str) -> bytes:
        """
        The next C{size} bytes, which hold C{what}.
        """
        end = self._offset + size
        if end > len(self._data):
            raise _Malformed(f"{what} runs past its end")
        data = self._data[self._offset : end]
        self._offset = end
        return data

    def number(self, size: int, what: str) -> int:
        """
        The next unsigned big-endian integer of C{size} bytes.
        """
        return int.from_bytes(self.take(size, what), "big")

    def vector(self, length_size: int, what: str) -> bytes:
        """
        The contents of the next vector, whose length takes C{length_size} bytes.
        """
        return self.take(self.number(length_size, what), what)


class ClientHelloReader:
    """
    Reads what a client sends first, until it knows the TLS server name asked for.

    Feed it each read. A ClientHello (RFC 8446 4.1.2, RFC 5246 7.4.1.2) may
    come in several TLS records and each record in several reads: the reader
    takes records apart as they complete and parses the message once whole,
    so the work is linear in the bytes read however they are split. It is
    strict, as the rest of txproxy is, since the server that terminates TLS
    must not read a different name from the same bytes: duplicate extensions,
    two host names, a host name that is not a DNS name or bytes left over
    inside the message make it L{NotClientHello}.

    With Encrypted Client Hello, the name read is the outer, public one.

    @ivar limit: the most bytes read before giving up.
    """

    __slots__ = ("limit", "_received", "_records", "_message", "_result")

    def __init__(self, limit: int = MAX_CLIENT_HELLO) -> None:
        """
        @param limit: the most bytes to read before giving up; see
            L{MAX_CLIENT_HELLO}.
        """
        self.limit = limit
        self._received = 0
        # Record-layer bytes not yet taken apart: at most one partial record.
        self._records = bytearray()
        # The handshake bytes of the complete records so far.
        self._message = bytearray()
        self._result: NotClientHello | ClientHello | None = None

    def feed(self, data: bytes) -> PeekResult:
        """
        Read more of what the client sent.

        @param data: the next bytes from the client.
        @return: L{NEED_MORE} until the bytes so far decide; then the
            L{ClientHello} or L{NotClientHello}, again on each later call.
        """
        if self._result is not None:
            return self._result
        self._received += len(data)
        self._records += data
        result: PeekResult
        try:
            result = self._read()
        except _Malformed as malformed:
            result = NotClientHello(malformed.reason)
        if isinstance(result, NeedMore):
            if self._received < self.limit:
                return result
            result = NotClientHello(f"no whole ClientHello in the first {self.limit} bytes")
        self._result = result
        self._records = bytearray()
        self._message = bytearray()
        return result

    def _read(self) -> NeedMore | ClientHello:
        """
        Take apart the complete records buffered, and parse the message once whole.

        @raise _Malformed: for what is not the start of a ClientHello, as soon
            as a byte shows it, so that a client of another protocol is not
            kept waiting for bytes it will never send.
        """
        records, message = self._records, self._message
        while records:
            if records[0] != _HANDSHAKE_RECORD:
                raise _Malformed("not a TLS handshake record")
            # Every TLS version's records say 3 (SSL 3.0's major number).
            if len(records) >= 2 and records[1] != 3:
                raise _Malformed("not a TLS record version")
            if len(records) < _RECORD_HEADER:
                break
            length = int.from_bytes(records[3:5], "big")
            # RFC 8446 5.1: no empty handshake fragment, none over 2^14.
            if not 0 < length <= _MAX_FRAGMENT:
                raise _Malformed(f"a TLS record of {length} bytes")
            end = _RECORD_HEADER + length
            if len(records) < end:
                break
            message += records[_RECORD_HEADER:end]
            del records[:end]
            if message[0] != _CLIENT_HELLO:
                raise _Malformed("the first handshake message is not a ClientHello")
            if len(message) < _MESSAGE_HEADER:
                continue
            size = int.from_bytes(message[1:4], "big")
            # At least one record header comes before the message.
            if _RECORD_HEADER + _MESSAGE_HEADER + size > self.limit:
                raise _Malformed(f"a ClientHello of {size} bytes, over {self.limit}")
            if len(message) >= _MESSAGE_HEADER + size:
                # Any bytes after it are the next message's, or the next protocol's.
                return _parse(bytes(message[_MESSAGE_HEADER : _MESSAGE_HEADER + size]))
        return NEED_MORE


def _parse(body: bytes) -> ClientHello:
    """
    Find the server name in the body of a ClientHello (RFC 8446 4.1.2).

    @raise _Malformed: for a body that breaks the grammar.
    """
    cursor = _Cursor(body)
    if cursor.take(2, "legacy_version")[0] != 3:
        raise _Malformed("not a TLS ClientHello version")
    cursor.take(32, "random")
    if len(cursor.vector(1, "legacy_session_id")) > 32:
        raise _Malformed("a session id over 32 bytes")
    suites = cursor.vector(2, "cipher_suites")
    if not suites or len(suites) % 2:
        raise _Malformed(f"cipher suites of {len(suites)} bytes")
    if not cursor.vector(1, "legacy_compression_methods"):
        raise _Malformed("no compression method")
    # RFC 5246 7.4.1.2: a TLS 1.2 ClientHello may end here, with no extensions.
    if cursor.at_end:
        return ClientHello(None)
    extensions = _Cursor(cursor.vector(2, "extensions"))
    if not cursor.at_end:
        raise _Malformed("bytes after the extensions")
    seen: set[int] = set()
    server_name = None
    while not extensions.at_end:
        kind = extensions.number(2, "extension type")
        data = extensions.vector(2, "extension data")
        # RFC 8446 4.2: at most one extension of each type.
        if kind in seen:
            raise _Malformed(f"extension {kind} twice")
        seen.add(kind)
        if kind == _SERVER_NAME:
            server_name = _host_name(data)
    return ClientHello(server_name)


def _host_name(data: bytes) -> str | None:
    """
    The host name in the data of a server_name extension (RFC 6066 3).

    Entries of other name types are skipped, as Go's C{crypto/tls} does:
    none is defined, and each would be a length-prefixed opaque value.

    @return: the host name, or L{None} when the list holds none.
    @raise _Malformed: for an empty list, two host names, or a host name
        that is not a DNS name.
    """
    outer = _Cursor(data)
    names = _Cursor(outer.vector(2, "server_name_list"))
    if not outer.at_end:
        raise _Malformed("bytes after the server_name_list")
    if names.at_end:
        raise _Malformed("an empty server_name_list")
    found: bytes | None = None
    while not names.at_end:
        kind = names.number(1, "name_type")
        name = names.vector(2, "server name")
        if kind != _HOST_NAME:
            continue
        # RFC 6066 3: no two names of the same type.
        if found is not None:
            raise _Malformed("two host names")
        found = name
    if found is None:
        return None
    if len(found) > _MAX_NAME or not _DNS_NAME.fullmatch(found):
        raise _Malformed("a server name that is not a DNS host name")
    return found.decode("ascii")


def _normalised(name: str) -> str:
    """
    A host name as matched: lower case, without its trailing dot.
    """
    name = name.lower()
    return name[:-1] if name.endswith(".") else name


class SNIRoutes(Generic[_T]):
    """
    The table of a TCP listener's SNI routes: which pool serves which server name.

    Patterns are exact names or a leading C{*.} wildcard, as nginx's
    C{server_name} has them: C{*.example.net} takes any name below
    C{example.net}, C{a.example.net} as well as C{a.b.example.net}, but not
    C{example.net} itself. An exact name wins over any wildcard, and a longer
    wildcard over a shorter one (C{*.b.example.net} over C{*.example.net}),
    whatever their order. Matching ignores case and a trailing dot. Of two
    routes with the same pattern the first is kept. It never changes once made.

    Generic in what it routes to, so that the relay can keep a pool with how
    it connects to it.
    """

    __slots__ = ("_exact", "_wildcards")

    def __init__(self, routes: Iterable[tuple[str, _T]]) -> None:
        """
        @param routes: C{(pattern, pool)} pairs, in configuration order.
        """
        self._exact: dict[str, _T] = {}
        # Keyed by the name after "*.": "example.net" for "*.example.net".
        self._wildcards: dict[str, _T] = {}
        for pattern, pool in routes:
            pattern = _normalised(pattern)
            if pattern.startswith("*."):
                self._wildcards.setdefault(pattern[2:], pool)
            else:
                self._exact.setdefault(pattern, pool)

    def __bool__(self) -> bool:
        """
        Whether there is any route.
        """
        return bool(self._exact or self._wildcards)

    def pool_for(self, name: str) -> _T | None:
        """
        The pool of a server name.

        @param name: the name a client asked for, such as
            L{ClientHello.server_name}.
        @return: the pool of the exact route for C{name}, else of the longest
            wildcard that matches it, else L{None} (for a name that is not an
            ASCII host name too).
        """
        # Checked before lower(), which makes "\u212a" (Kelvin) a "k".
        if not name.isascii():
            return None
        name = _normalised(name)
        if not name or name.startswith(".") or ".." in name:
            return None
        pool = self._exact.get(name)
        if pool is not None or not self._wildcards:
            return pool
        dot = name.find(".")
        while dot >= 0:
            pool = self._wildcards.get(name[dot + 1 :])
            if pool is not None:
                return pool
            dot = name.find(".", dot + 1)
        return None
