"""
Tests for L{txproxy.tap}: the C{twistd txproxy} options and plugin.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.loopback import RawClient, connect_raw, split_response, start_origin
from txproxy import config
from txproxy.service import ProxyService
from txproxy.tap import FileReload, HangupReloads, Options, default_config_path, makeService

VALID = """\
from txproxy.config import Pool, Proxy, Server, TCPListener
pool = Pool("db", servers=[Server("127.0.0.1:5432")])
proxy = Proxy(listeners=[TCPListener("tcp:0:interface=127.0.0.1", pool=pool)])
"""

INVALID = """\
from txproxy.config import Pool, Proxy, Server, TCPListener
pool = Pool("db", servers=[Server("127.0.0.1:99999")])
proxy = Proxy(listeners=[TCPListener("tcp:0:interface=127.0.0.1", pool=pool)])
"""


class OptionsTests(SynchronousTestCase):
    """
    Tests for L{Options}.
    """

    def write(self, text: str) -> str:
        path = Path(self.mktemp())
        path.write_text(text)
        return str(path)

    def capture_stdout(self) -> io.StringIO:
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        return out

    def test_default_is_the_demo(self) -> None:
        """
        Without C{--config} the installed copy of C{etc/txproxy.py} is loaded:
        a TCP listener on 127.0.0.1:8080 over two demo origins.
        """
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["config"], default_config_path())
        proxy = options["proxy"]
        self.assertEqual(
            [listener.endpoint for listener in proxy.listeners], ["tcp:8080:interface=127.0.0.1"]
        )
        self.assertEqual(len(proxy.services), 2)

    def test_default_matches_etc(self) -> None:
        """
        The installed default configuration is the same text as C{etc/txproxy.py}.
        """
        etc = Path(__file__).parent.parent / "etc" / "txproxy.py"
        self.assertEqual(Path(default_config_path()).read_text(), etc.read_text())

    def test_config_loaded(self) -> None:
        """
        C{--config FILE} loads that file.
        """
        options = Options()
        options.parseOptions(["--config", self.write(VALID)])
        self.assertIsInstance(options["proxy"], config.Proxy)

    def test_invalid_config_refused(self) -> None:
        """
        An invalid file is a usage error naming the file, line and field, so
        twistd stops before starting anything.
        """
        path = self.write(INVALID)
        error = self.assertRaises(UsageError, Options().parseOptions, ["--config", path])
        self.assertIn(f"{path}:2: Server('127.0.0.1:99999'): address:", str(error))

    def test_check_valid(self) -> None:
        """
        C{--check} on a valid file says so and exits 0.
        """
        out = self.capture_stdout()
        path = self.write(VALID)
        exit = self.assertRaises(SystemExit, Options().parseOptions, ["--config", path, "--check"])
        self.assertEqual(exit.code, 0)
        self.assertIn("configuration ok", out.getvalue())

    def test_check_invalid(self) -> None:
        """
        C{--check} on an invalid file prints each error and exits 1.
        """
        out = self.capture_stdout()
        path = self.write(INVALID)
        exit = self.assertRaises(SystemExit, Options().parseOptions, ["--config", path, "--check"])
        self.assertEqual(exit.code, 1)
        self.assertIn(f"{path}:2: Server('127.0.0.1:99999')", out.getvalue())

    def test_make_service(self) -> None:
        """
        L{makeService} builds the proxy's service tree from the options.
        """
        options = Options()
        options.parseOptions(["--config", self.write(VALID)])
        self.assertIsInstance(makeService(options), ProxyService)

    def test_unusable_certificate_refused(self) -> None:
        """
        A configuration whose certificate file cannot be used is refused at
        start, and by C{--check}, with the file and the reason.
        """
        missing = self.mktemp()
        path = self.write(
            "from txproxy.config import HTTPListener, Pool, Proxy, Route, Server, TLS\n"
            'pool = Pool("web", servers=[Server("127.0.0.1:80")])\n'
            f"tls = TLS(certificates=[{missing!r}])\n"
            'proxy = Proxy(listeners=[HTTPListener("tcp:0", routes=[Route(pool)], tls=tls)])\n'
        )
        error = self.assertRaises(UsageError, Options().parseOptions, ["--config", path])
        self.assertIn(f"{missing}: No such file or directory", str(error))
        out = self.capture_stdout()
        exit = self.assertRaises(SystemExit, Options().parseOptions, ["--config", path, "--check"])
        self.assertEqual(exit.code, 1)
        self.assertIn(f"{missing}: No such file or directory", out.getvalue())


class _ThreadCalls:
    """
    Records what is handed to the reactor's thread, as a signal handler must.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., object], tuple[object, ...], dict[str, object]]] = []

    def callFromThread(self, f: Callable[..., object], *args: object, **kwargs: object) -> None:
        self.calls.append((f, args, kwargs))


class HangupReloadsTests(SynchronousTestCase):
    """
    L{HangupReloads} turns C{SIGHUP} into a call on the reactor's thread.
    """

    def test_hangup(self) -> None:
        """
        While running, C{SIGHUP} calls the reload through C{callFromThread};
        once stopped, the previous handler is back.
        """
        reactor = _ThreadCalls()
        called: list[str] = []
        previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.addCleanup(signal.signal, signal.SIGHUP, previous)
        reloads = HangupReloads(reactor, lambda: called.append("reload"))
        reloads.startService()
        os.kill(os.getpid(), signal.SIGHUP)
        self.assertEqual(called, [])
        [(function, args, kwargs)] = reactor.calls
        function(*args, **kwargs)
        self.assertEqual(called, ["reload"])
        reloads.stopService()
        self.assertIs(signal.getsignal(signal.SIGHUP), signal.SIG_IGN)


HTTP = """\
from txproxy.config import HTTPListener, Pool, Proxy, Route, Server
pool = Pool("web", servers=[Server("127.0.0.1:{port}")])
proxy = Proxy(listeners=[HTTPListener("tcp:0:interface=127.0.0.1", routes=[Route(pool{route})])])
"""


class FileReloadTests(TestCase):
    """
    L{FileReload}, as C{SIGHUP} calls it in the service tree L{makeService} builds.
    """

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.port = start_origin(self).getHost().port
        self.write()
        options = Options()
        options.parseOptions(["--config", self.path])
        self.root = makeService(options)
        assert isinstance(self.root, ProxyService)
        self.root.startService()
        self.addCleanup(self.root.stopService)
        [self.hangup] = [child for child in self.root if isinstance(child, HangupReloads)]
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def write(self, route: str = "", text: str = HTTP) -> None:
        Path(self.path).write_text(text.format(port=self.port, route=route))

    def errors(self) -> list[str]:
        return [formatEvent(event) for event in self.events if event["log_level"] is LogLevel.error]

    @inlineCallbacks
    def status(self, path: bytes) -> Deferred[int]:
        """
        The status the proxy answers a request for C{path} with.
        """
        listening = self.root.listeners[0].port
        assert listening is not None
        client: RawClient = yield connect_raw(listening.getHost().port)
        client.transport.write(
            b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        data = yield client.closed
        return split_response(data)[0]

    @inlineCallbacks
    def test_good_file_applied(self) -> Deferred[None]:
        """
        The file is read again and what changed applies.
        """
        self.assertIsInstance(self.hangup.reload, FileReload)
        self.assertEqual((yield self.status(b"/v2/")), 200)
        self.write(route=', path="/v1/"')
        self.assertTrue(self.hangup.reload())
        yield self.root.reloaded()
        self.assertEqual((yield self.status(b"/v2/")), 404)
        self.assertEqual(self.errors(), [])

    @inlineCallbacks
    def test_bad_file_refused(self) -> Deferred[None]:
        """
        A file with a mistake is refused: each error is logged with its file
        and line, and the running configuration goes on serving.
        """
        running = self.root.proxy
        self.write(route=', path="no-slash"')
        self.assertFalse(self.hangup.reload())
        [error, summary] = self.errors()
        self.assertIn(f"reload refused: {self.path}:3: Route(", error)
        self.assertIn("path:", error)
        self.assertIn("the running configuration stays", summary)
        self.assertIs(self.root.proxy, running)
        self.assertEqual((yield self.status(b"/anything")), 200)

    @inlineCallbacks
    def test_unusable_certificate_refused(self) -> Deferred[None]:
        """
        A file whose TLS files cannot be used is refused, the file named.
        """
        missing = self.mktemp()
        self.write(
            text=(
                "from txproxy.config import HTTPListener, Pool, Proxy, Route, Server, TLS\n"
                'pool = Pool("web", servers=[Server("127.0.0.1:{port}")])\n'
                f"tls = TLS(certificates=[{missing!r}])\n"
                'proxy = Proxy(listeners=[HTTPListener("tcp:0", routes=[Route(pool)], tls=tls)])\n'
            )
        )
        self.assertFalse(self.hangup.reload())
        self.assertIn(f"reload refused: {missing}: No such file or directory", self.errors()[0])
        self.assertEqual((yield self.status(b"/")), 200)


class PluginTests(SynchronousTestCase):
    """
    Tests for the twistd plugin.
    """

    def test_listed(self) -> None:
        """
        twistd finds the C{txproxy} plugin, which names L{txproxy.tap}.
        """
        [maker] = {
            plugin.module: plugin
            for plugin in getPlugins(IServiceMaker)
            if plugin.tapname == "txproxy"
        }.values()
        self.assertEqual(maker.module, "txproxy.tap")
        self.assertIs(maker.options, Options)


class TwistdLog(ProcessProtocol):
    """
    The output of a C{twistd} process, line by line, with a L{Deferred} for
    the first line that matches a pattern.
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[None] = Deferred()
        self._waiting: list[tuple[re.Pattern[bytes], Deferred[re.Match[bytes]]]] = []

    def wait_for(self, pattern: bytes) -> Deferred[re.Match[bytes]]:
        found: Deferred[re.Match[bytes]] = Deferred()
        self._waiting.append((re.compile(pattern), found))
        self._check()
        return found

    def outReceived(self, data: bytes) -> None:
        self.output += data
        self._check()

    errReceived = outReceived

    def _check(self) -> None:
        for pattern, found in list(self._waiting):
            match = pattern.search(self.output)
            if match is not None:
                self._waiting.remove((pattern, found))
                found.callback(match)

    def processEnded(self, reason: Failure) -> None:
        for _, found in self._waiting:
            found.errback(AssertionError(f"twistd ended without it; it said:\n{self.output!r}"))
        self._waiting = []
        self.ended.callback(None)


class TwistdTests(TestCase):
    """
    C{twistd -n txproxy}, the README's command, run as a user runs it.
    """

    timeout = 30

    @inlineCallbacks
    def test_serves_on_proxy_reactor(self) -> Deferred[None]:
        """
        Without C{-r}, C{twistd txproxy} runs on L{txproxy.reactor.ProxyReactor}
        and proxies a request; C{SIGTERM} stops it.
        """
        from twisted.internet import reactor

        origin = start_origin(self).getHost().port
        path = Path(self.mktemp())
        path.write_text(HTTP.format(port=origin, route=""))
        twistd = Path(sys.executable).with_name("twistd")
        output = TwistdLog()
        argv = [str(twistd), "-n", "--pidfile=", "txproxy", "--config", str(path)]
        process = reactor.spawnProcess(output, str(twistd), argv, env=os.environ)

        def stop() -> Deferred[None]:
            if process.pid is not None:
                process.signalProcess("TERM")
            return output.ended

        self.addCleanup(stop)
        yield output.wait_for(rb"reactor class: txproxy\.reactor\.ProxyReactor")
        ready = yield output.wait_for(rb"ready on 127\.0\.0\.1:(\d+)")
        client: RawClient = yield connect_raw(int(ready.group(1)))
        client.transport.write(b"GET /twistd HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        status, headers, body = split_response((yield client.closed))
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["uri"], "/twistd")
        process.signalProcess("TERM")
        yield output.ended
        self.assertIn(b"Server Shut Down", output.output)
