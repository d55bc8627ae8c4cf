# -*- test-case-name: tests.test_accesslog -*-
"""
Tests for L{txproxy.http.accesslog}.
"""

from __future__ import annotations

import calendar
import json
import os

from attrs import evolve
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from txproxy.http.accesslog import (
    FORMATS,
    AccessLog,
    AccessRecord,
    format_combined,
    format_json,
)
from txproxy.http.events import RequestHead

# 29 Nov 2026 05:12:44.25 UTC.
WHEN = calendar.timegm((2026, 11, 29, 5, 12, 44)) + 0.25

RECORD = AccessRecord(
    client="127.0.0.1",
    time=WHEN,
    method=b"GET",
    target=b"/",
    version=b"1.1",
    status=200,
    bytes_sent=16,
    duration=0.0032,
    referer=None,
    user_agent=b"curl/7.88.1",
    upstream="10.0.0.1:80",
    pool="api",
)

COMBINED = (
    '127.0.0.1 - - [29/Nov/2026:05:12:44 +0000] "GET / HTTP/1.1" 200 16 "-" "curl/7.88.1"'
    " upstream=10.0.0.1:80 time=0.003 pool=api"
)


class AccessRecordTests(SynchronousTestCase):
    """
    Tests for L{AccessRecord}.
    """

    def test_for_request(self) -> None:
        """
        A record made for a request takes its request line and its first
        C{Referer} and C{User-Agent}, whatever the case of their names.
        """
        head = RequestHead(
            b"POST",
            b"/a?b=1",
            b"1.0",
            (
                (b"Host", b"a.example"),
                (b"user-agent", b"curl/8"),
                (b"REFERER", b"https://a.example/"),
                (b"User-Agent", b"other"),
            ),
        )
        record = AccessRecord.for_request(
            head, client="::1", time=WHEN, status=201, bytes_sent=3, duration=0.5
        )
        self.assertEqual(
            record,
            AccessRecord(
                "::1",
                WHEN,
                b"POST",
                b"/a?b=1",
                b"1.0",
                201,
                3,
                0.5,
                referer=b"https://a.example/",
                user_agent=b"curl/8",
            ),
        )

    def test_for_request_without_fields(self) -> None:
        """
        A request without C{Referer} or C{User-Agent} gives L{None} for them.
        """
        head = RequestHead(b"GET", b"/", b"1.1", ((b"Host", b"a"),))
        record = AccessRecord.for_request(
            head,
            client="1.2.3.4",
            time=WHEN,
            status=200,
            bytes_sent=0,
            duration=0,
            upstream="10.0.0.1:80",
            pool="api",
        )
        self.assertEqual((record.referer, record.user_agent), (None, None))
        self.assertEqual((record.upstream, record.pool), ("10.0.0.1:80", "api"))


class FormatCombinedTests(SynchronousTestCase):
    """
    Tests for L{format_combined}.
    """

    def test_line(self) -> None:
        """
        A line is nginx's combined format, then the upstream, the time taken
        to the millisecond and the pool.
        """
        self.assertEqual(format_combined(RECORD), COMBINED)

    def test_unknown_fields(self) -> None:
        """
        A field not known is C{-}: no referer or agent, empty ones, and no
        upstream or pool for a response txproxy made.
        """
        record = evolve(RECORD, referer=b"", user_agent=None, upstream=None, pool=None, status=404)
        self.assertEqual(
            format_combined(record),
            '127.0.0.1 - - [29/Nov/2026:05:12:44 +0000] "GET / HTTP/1.1" 404 16 "-" "-"'
            " upstream=- time=0.003 pool=-",
        )

    def test_http2(self) -> None:
        """
        An HTTP/2 request's line says C{HTTP/2.0}, as nginx's does.
        """
        line = format_combined(evolve(RECORD, version=b"2"))
        self.assertIn('"GET / HTTP/2.0"', line)

    def test_no_request_line(self) -> None:
        """
        A request whose line could not be read is logged as C{"-"}.
        """
        record = evolve(RECORD, method=b"", target=b"", version=b"", status=400)
        self.assertIn(' "-" 400 ', format_combined(record))

    def test_escaping(self) -> None:
        """
        Quotes, backslashes, control bytes and bytes outside ASCII become
        C{\\xHH}, as nginx writes them, in the request line, referer and agent.
        """
        record = evolve(
            RECORD,
            target=b'/a"b\\c\x01\xff',
            referer=b'x" "y',
            user_agent=b"evil\r\n127.0.0.1 - - forged\x7f",
        )
        self.assertEqual(
            format_combined(record),
            '127.0.0.1 - - [29/Nov/2026:05:12:44 +0000] "GET /a\\x22b\\x5Cc\\x01\\xFF HTTP/1.1"'
            ' 200 16 "x\\x22 \\x22y" "evil\\x0D\\x0A127.0.0.1 - - forged\\x7F"'
            " upstream=10.0.0.1:80 time=0.003 pool=api",
        )

    def test_time_in_utc_english(self) -> None:
        """
        Times are in UTC with English month names and zero-padded days.
        """
        record = evolve(RECORD, time=calendar.timegm((2027, 2, 3, 23, 4, 5)))
        self.assertIn("[03/Feb/2027:23:04:05 +0000]", format_combined(record))


class FormatJSONTests(SynchronousTestCase):
    """
    Tests for L{format_json}.
    """

    def test_line(self) -> None:
        """
        A line is one JSON object with plainly named keys.
        """
        self.assertEqual(
            format_json(RECORD),
            '{"time":"2026-11-29T05:12:44.250Z","client":"127.0.0.1","method":"GET",'
            '"target":"/","version":"1.1","status":200,"bytes_sent":16,"duration":0.0032,'
            '"upstream":"10.0.0.1:80","pool":"api","referer":null,"user_agent":"curl/7.88.1"}',
        )

    def test_no_upstream(self) -> None:
        """
        No upstream, given as L{None} or C{-}, is C{null}.
        """
        for upstream in (None, "-"):
            line = json.loads(format_json(evolve(RECORD, upstream=upstream)))
            self.assertIsNone(line["upstream"])

    def test_escaping(self) -> None:
        """
        Quotes, line ends and other text are escaped by JSON, bytes that are
        not UTF-8 as C{\\xHH} text, and the line stays one ASCII line.
        """
        record = evolve(RECORD, target=b'/"\n\xc3\xa9\xff', user_agent=b"a\\b")
        line = format_json(record)
        self.assertTrue(line.isascii())
        self.assertNotIn("\n", line)
        decoded = json.loads(line)
        self.assertEqual(decoded["target"], '/"\n\xe9\\xff')
        self.assertEqual(decoded["user_agent"], "a\\b")


class AccessLogTests(SynchronousTestCase):
    """
    Tests for L{AccessLog}.
    """

    def read(self, path: str) -> str:
        """
        Read a log file.
        """
        with open(path, encoding="ascii") as file:
            return file.read()

    def test_formats(self) -> None:
        """
        The formats are C{combined} and C{json}; any other is refused.
        """
        self.assertEqual(FORMATS, {"combined": format_combined, "json": format_json})
        self.assertRaises(ValueError, AccessLog, None, "common")

    def test_file(self) -> None:
        """
        Lines are appended to the file, after what it held, each as soon as
        it is logged.
        """
        path = self.mktemp()
        with open(path, "w") as file:
            file.write("before\n")
        log = AccessLog(path)
        self.addCleanup(log.close)
        log.log(RECORD)
        self.assertEqual(self.read(path), f"before\n{COMBINED}\n")
        log.log(RECORD)
        self.assertEqual(self.read(path), f"before\n{COMBINED}\n{COMBINED}\n")

    def test_file_json(self) -> None:
        """
        A log in JSON writes one object a line.
        """
        path = self.mktemp()
        log = AccessLog(path, "json")
        self.addCleanup(log.close)
        log.log(RECORD)
        self.assertEqual(self.read(path), format_json(RECORD) + "\n")

    def test_reopen(self) -> None:
        """
        After the file is moved away, as log rotation does, L{AccessLog.reopen}
        makes a new file at the path, and lines go there.
        """
        path = self.mktemp()
        log = AccessLog(path)
        self.addCleanup(log.close)
        log.log(RECORD)
        os.rename(path, path + ".1")
        log.log(evolve(RECORD, status=201))
        log.reopen()
        log.log(evolve(RECORD, status=202))
        old = self.read(path + ".1").splitlines()
        self.assertEqual([line.split('" ')[1][:3] for line in old], ["200", "201"])
        self.assertEqual(self.read(path), format_combined(evolve(RECORD, status=202)) + "\n")

    def test_reopen_fails(self) -> None:
        """
        When the path cannot be opened again, L{AccessLog.reopen} raises, and
        the log goes on writing to the file it had.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        path = os.path.join(directory, "access.log")
        log = AccessLog(path)
        self.addCleanup(log.close)
        os.rename(directory, directory + ".old")
        self.assertRaises(OSError, log.reopen)
        log.log(RECORD)
        self.assertEqual(self.read(os.path.join(directory + ".old", "access.log")), COMBINED + "\n")

    def test_write_failure_reported_once(self) -> None:
        """
        A file that cannot be written is reported once in the twistd log, and
        logging does not raise.
        """
        if not os.path.exists("/dev/full"):
            self.skipTest("needs /dev/full")
        log = AccessLog("/dev/full")
        self.addCleanup(log.close)
        with capturedLogs() as events:
            log.log(RECORD)
            log.log(RECORD)
        errors = [event for event in events if event["log_level"] is LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["path"], "/dev/full")

    def test_close(self) -> None:
        """
        Once closed, the log discards lines, and closing again does nothing.
        """
        path = self.mktemp()
        log = AccessLog(path)
        log.close()
        log.log(RECORD)
        log.reopen()
        log.close()
        self.assertEqual(self.read(path), "")

    def test_twistd_log(self) -> None:
        """
        Without a path, each line is an info event of the twistd log, with
        the line and the record as fields, until the log is closed.
        """
        log = AccessLog(None, "json")
        with capturedLogs() as events:
            log.log(RECORD)
            log.reopen()
            log.close()
            log.log(RECORD)
        [event] = events
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(event["log_format"], "{line}")
        self.assertEqual(event["line"], format_json(RECORD))
        self.assertIs(event["record"], RECORD)
