# -*- test-case-name: tests.test_accesslog -*-
"""
The access log: a line per request, in combined log format or JSON, to a file or the twistd log.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable
from functools import lru_cache

from attrs import frozen
from twisted.logger import Logger

from txproxy.http.events import RequestHead

__all__ = ["FORMATS", "AccessLog", "AccessRecord", "format_combined", "format_json"]


@frozen
class AccessRecord:
    """
    What the access log says of one request.

    Fields copied from the request are its bytes as received; the formats
    make them safe to print.

    @ivar client: the client's address, without port.
    @ivar time: when the request arrived, in seconds since the epoch.
    @ivar method: the method; empty when the request line could not be read.
    @ivar target: the request-target as received.
    @ivar version: the HTTP version, such as C{b"1.1"}.
    @ivar status: the status sent to the client.
    @ivar bytes_sent: the bytes of body sent to the client.
    @ivar duration: seconds from the request's arrival to the response's end.
    @ivar referer: the C{Referer} value, or L{None}.
    @ivar user_agent: the C{User-Agent} value, or L{None}.
    @ivar upstream: the C{host:port} of the server that answered, or L{None}
        (or C{"-"}) when txproxy answered itself.
    @ivar pool: the name of the pool of the matched route, or L{None}.
    """

    client: str
    time: float
    method: bytes
    target: bytes
    version: bytes
    status: int
    bytes_sent: int
    duration: float
    referer: bytes | None = None
    user_agent: bytes | None = None
    upstream: str | None = None
    pool: str | None = None

    @classmethod
    def for_request(
        cls,
        head: RequestHead,
        *,
        client: str,
        time: float,
        status: int,
        bytes_sent: int,
        duration: float,
        upstream: str | None = None,
        pool: str | None = None,
    ) -> AccessRecord:
        """
        Make the record of a request, taking from its head the request line,
        C{Referer} and C{User-Agent}.

        @param head: the request.
        @see: L{AccessRecord} for the other arguments.
        """
        referer = user_agent = None
        for name, value in head.headers:
            name = name.lower()
            if name == b"referer":
                if referer is None:
                    referer = value
            elif name == b"user-agent" and user_agent is None:
                user_agent = value
        return cls(
            client,
            time,
            head.method,
            head.target,
            head.version,
            status,
            bytes_sent,
            duration,
            referer,
            user_agent,
            upstream,
            pool,
        )


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# As nginx's ngx_http_log_escape: '"', '\', control bytes and bytes outside
# ASCII become \xHH, so that a field can neither end early nor forge a line.
_UNSAFE = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')
_ESCAPES = {code: f"\\x{code:02X}" for code in (*range(0x20), 0x22, 0x5C, *range(0x7F, 0x100))}


def _escaped(value: bytes) -> str:
    """
    Make bytes of a request safe to print inside a quoted field.
    """
    if _UNSAFE.search(value) is None:
        return value.decode("ascii")
    return value.decode("latin-1").translate(_ESCAPES)


# Each second's timestamp is formatted once, however many requests it sees.
@lru_cache(maxsize=8)
def _common_log_time(second: int) -> str:
    """
    A time in the common log format, in UTC and in English whatever the
    locale: C{29/Nov/2026:05:12:44 +0000}.
    """
    t = time.gmtime(second)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


@lru_cache(maxsize=8)
def _iso_second(second: int) -> str:
    """
    A time, to the second, in ISO 8601 and UTC: C{2026-11-29T05:12:44}.
    """
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def format_combined(record: AccessRecord) -> str:
    """
    Format a record as a line of the combined log format, with txproxy's
    fields after it.

    The line is nginx's C{combined} format, C{-} standing for a field not
    known, followed by C{ upstream=HOST:PORT time=SECONDS pool=NAME}: the
    server that answered, the seconds the request took to the millisecond,
    and the route's pool, each C{-} when there is none (one line, split here)::

        127.0.0.1 - - [29/Nov/2026:05:12:44 +0000] "GET / HTTP/1.1" 200 16 "-"
        "curl/7.88.1" upstream=10.0.0.1:80 time=0.003 pool=api

    The request line, referer and user agent are escaped as nginx does.

    @return: the line, without its line end.
    """
    if record.method:
        # HTTP/2 is logged as nginx logs it, "HTTP/2.0".
        version = b"2.0" if record.version == b"2" else record.version
        request = _escaped(b"%s %s HTTP/%s" % (record.method, record.target, version))
    else:
        request = "-"
    referer = _escaped(record.referer) if record.referer else "-"
    user_agent = _escaped(record.user_agent) if record.user_agent else "-"
    return (
        f"{record.client} - - [{_common_log_time(int(record.time))}] "
        f'"{request}" {record.status} {record.bytes_sent} "{referer}" "{user_agent}" '
        f"upstream={record.upstream or '-'} time={record.duration:.3f} pool={record.pool or '-'}"
    )


def _text(value: bytes | None) -> str | None:
    """
    Bytes of a request as text for JSON, bytes that are not UTF-8 as C{\\xHH}.
    """
    return None if value is None else value.decode("utf-8", "backslashreplace")


def format_json(record: AccessRecord) -> str:
    """
    Format a record as one JSON object, on one line.

    Its keys are C{time} (ISO 8601 in UTC, to the millisecond), C{client},
    C{method}, C{target}, C{version}, C{status}, C{bytes_sent}, C{duration}
    (seconds), C{upstream}, C{pool}, C{referer} and C{user_agent}, L{None}
    becoming C{null}. Text is ASCII, anything else escaped by JSON.

    @return: the line, without its line end.
    """
    second = int(record.time)
    milliseconds = min(int((record.time - second) * 1000), 999)
    return json.dumps(
        {
            "time": f"{_iso_second(second)}.{milliseconds:03d}Z",
            "client": record.client,
            "method": _text(record.method),
            "target": _text(record.target),
            "version": _text(record.version),
            "status": record.status,
            "bytes_sent": record.bytes_sent,
            "duration": round(record.duration, 6),
            "upstream": None if record.upstream == "-" else record.upstream,
            "pool": record.pool,
            "referer": _text(record.referer),
            "user_agent": _text(record.user_agent),
        },
        separators=(",", ":"),
    )


FORMATS: dict[str, Callable[[AccessRecord], str]] = {
    "combined": format_combined,
    "json": format_json,
}
"""
The formats an access log may be written in, by name.
"""


class AccessLog:
    """
    Writes one line per request to a file or, without one, to the twistd log.

    A file is opened to append without a buffer, so that each line is one
    C{write(2)}: it reaches the file at once, whole, even when several
    processes share the file. That costs a system call per request, a few
    microseconds.

    @ivar path: the file, or L{None} for the twistd log.
    """

    _log = Logger()

    def __init__(self, path: str | None = None, format: str = "combined") -> None:
        """
        Open the log.

        @param path: the file to append to, or L{None} to emit each line as an
            event of the twistd log, with the line as C{line} and the
            L{AccessRecord} as C{record}.
        @param format: a name in L{FORMATS}.
        @raise ValueError: for a format not in L{FORMATS}.
        @raise OSError: when the file cannot be opened.
        """
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(sorted(FORMATS))}, not {format!r}")
        self.path = path
        self._format = FORMATS[format]
        self._file: io.RawIOBase | None = None if path is None else self._open(path)
        self._closed = False
        self._failing = False

    @staticmethod
    def _open(path: str) -> io.RawIOBase:
        """
        Open a file to append to, unbuffered.
        """
        return io.FileIO(path, "a")

    def log(self, record: AccessRecord) -> None:
        """
        Log one request; discarded once the log is closed.

        A file that cannot be written is reported in the twistd log, once
        until it can be written again, and never raises to the caller.
        """
        if self._closed:
            return
        line = self._format(record)
        if self._file is None:
            self._log.info("{line}", line=line, record=record)
            return
        try:
            self._file.write(f"{line}\n".encode())
        except OSError as error:
            if not self._failing:
                self._failing = True
                self._log.error(
                    "cannot write access log {path}: {error}", path=self.path, error=error
                )
        else:
            self._failing = False

    def reopen(self) -> None:
        """
        Open the file again by its path, as log rotation needs once it has
        moved the file away; then close the file written until now.

        @raise OSError: when the file cannot be opened; the log goes on
            writing to the file it had.
        """
        if self.path is None or self._closed:
            return
        new = self._open(self.path)
        old, self._file = self._file, new
        if old is not None:
            old.close()

    def close(self) -> None:
        """
        Close the file, if any; lines logged after this are discarded.
        """
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None
