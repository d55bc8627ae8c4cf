# -*- test-case-name: tests.test_reload -*-
"""
Tests for L{txproxy.reload}: what differs between two configurations, and how it is told.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import evolve, frozen
from twisted.application.service import IService, Service
from twisted.internet.interfaces import IReactorCore
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txproxy.config import (
    TLS,
    AccessLog,
    Admin,
    HealthCheck,
    HTTPListener,
    Limits,
    Pool,
    Proxy,
    Route,
    Server,
    TCPListener,
    UpstreamTLS,
    load,
)
from txproxy.interfaces import IBalancer, IServerView, IServiceFactory, PickContext
from txproxy.reload import (
    SERVER_FIELDS_IN_PLACE,
    AdminChange,
    Changes,
    ListenerChange,
    ListenerKindChange,
    PoolChange,
    ServerChange,
    diff,
)


def _api(*servers: Server) -> Pool:
    """
    Make the pool C{api}, by default of two servers; L{evolve} it for other settings.
    """
    return Pool("api", servers or (Server("10.0.0.1:80"), Server("10.0.0.2:80")))


def _db(*servers: Server) -> Pool:
    """
    Make the pool C{db}, by default of one server.
    """
    return Pool("db", servers or (Server("10.0.1.1:5432"),))


def _proxy(api: Pool | None = None, db: Pool | None = None, admin: Admin | None = None) -> Proxy:
    """
    Make a configuration with an HTTP listener on port 8080 routing to C{api}
    and a TCP listener on port 15432 relaying to C{db}.
    """
    api = api or _api()
    return Proxy(
        [
            HTTPListener("tcp:8080", routes=[Route(api, path="/v1/"), Route(api)]),
            TCPListener("tcp:15432", pool=db or _db()),
        ],
        admin=admin,
    )


@implementer(IBalancer)
class _FirstAvailable:
    """
    A user's balancer with no equality of its own: the first available server.
    """

    def pick(self, servers: Sequence[IServerView], context: PickContext) -> IServerView | None:
        """
        Pick the first available server.
        """
        return next((server for server in servers if server.available), None)


@implementer(IServiceFactory)
@frozen
class _Origin:
    """
    A user's service factory that compares by value, as an C{attrs} class does.
    """

    name: str

    def make_service(self, reactor: IReactorCore) -> IService:
        """
        Make a service that does nothing.
        """
        return Service()


class EmptyTests(SynchronousTestCase):
    """
    Configurations that run the same proxy make no changes.
    """

    def test_same_configuration(self) -> None:
        """
        A configuration compared with itself has no changes and no log lines.
        """
        proxy = _proxy(admin=Admin())
        changes = diff(proxy, proxy)
        self.assertTrue(changes.empty)
        self.assertEqual(changes.describe(), [])

    def test_equal_configurations(self) -> None:
        """
        Two configurations built alike, as a file run twice builds them, have
        no changes; each listener is kept, unchanged.
        """
        changes = diff(_proxy(admin=Admin()), _proxy(admin=Admin()))
        self.assertTrue(changes.empty)
        self.assertEqual(changes.describe(), [])
        self.assertEqual(
            [(kept.endpoint, kept.changed) for kept in changes.listeners_kept],
            [("tcp:8080", ()), ("tcp:15432", ())],
        )
        self.assertEqual(changes.listeners_changed, ())

    def test_no_changes_value(self) -> None:
        """
        L{Changes} made with no arguments is empty and refuses no connections.
        """
        self.assertTrue(Changes().empty)
        self.assertFalse(Changes().refuses_connections)
        self.assertEqual(Changes().describe(), [])


class PoolTests(SynchronousTestCase):
    """
    Pools match by name, and their servers by address.
    """

    def test_pool_added(self) -> None:
        """
        A pool with a new name is added whole.
        """
        web = Pool("web", [Server("10.0.2.1:80")])
        old = _proxy()
        new = Proxy([*old.listeners, HTTPListener("tcp:8081", routes=[Route(web)])])
        changes = diff(old, new)
        self.assertEqual(changes.pools_added, (web,))
        self.assertEqual(changes.pools_removed, ())
        self.assertEqual(changes.pools_changed, ())
        self.assertIn("pool web added (1 server)", changes.describe())

    def test_pool_removed(self) -> None:
        """
        A pool no listener uses any more is removed by name, and its servers drain.
        """
        web = Pool("web", [Server("10.0.2.1:80")])
        new = _proxy()
        old = Proxy([*new.listeners, HTTPListener("tcp:8081", routes=[Route(web)])])
        changes = diff(old, new)
        self.assertEqual(changes.pools_removed, ("web",))
        self.assertEqual(changes.pools_added, ())
        self.assertEqual(changes.describe()[-1], "pool web removed (its servers drain)")

    def test_pool_renamed(self) -> None:
        """
        A renamed pool is one pool removed and another added, and the routes
        that now name the new pool have changed.
        """
        servers = (Server("10.0.0.1:80"),)
        changes = diff(_proxy(_api(*servers)), _proxy(Pool("app", servers)))
        self.assertEqual([pool.name for pool in changes.pools_added], ["app"])
        self.assertEqual(changes.pools_removed, ("api",))
        self.assertEqual(
            [(kept.endpoint, kept.changed) for kept in changes.listeners_changed],
            [("tcp:8080", ("routes",))],
        )

    def test_server_added(self) -> None:
        """
        A server with a new address is added to its pool; nothing else changes.
        """
        added = Server("10.0.0.3:80")
        old = _proxy()
        new = _proxy(_api(Server("10.0.0.1:80"), Server("10.0.0.2:80"), added))
        [change] = diff(old, new).pools_changed
        self.assertEqual(change.name, "api")
        self.assertEqual(change.servers_added, (added,))
        self.assertEqual(
            (change.servers_removed, change.servers_changed, change.settings_changed), ((), (), ())
        )
        self.assertEqual(diff(old, new).describe(), ["pool api: server 10.0.0.3:80 added"])

    def test_server_removed(self) -> None:
        """
        A server no longer in its pool is removed by address, and drains.
        """
        changes = diff(_proxy(), _proxy(_api(Server("10.0.0.1:80"))))
        [change] = changes.pools_changed
        self.assertEqual(change.servers_removed, ("10.0.0.2:80",))
        self.assertEqual(change.servers_added, ())
        self.assertEqual(changes.describe(), ["pool api: server 10.0.0.2:80 removed (drains)"])

    def test_server_weight_changed(self) -> None:
        """
        A server kept by address with another weight changes in place.
        """
        new = _proxy(_api(Server("10.0.0.1:80"), Server("10.0.0.2:80", weight=3)))
        changes = diff(_proxy(), new)
        [change] = changes.pools_changed
        [server] = change.servers_changed
        self.assertEqual(server.address, "10.0.0.2:80")
        self.assertEqual(server.changed, ("weight",))
        self.assertEqual(server.new.weight, 3)
        self.assertTrue(server.in_place)
        self.assertEqual(
            changes.describe(), ["pool api: server 10.0.0.2:80: weight changed (in place)"]
        )

    def test_server_settings_in_place(self) -> None:
        """
        Weight, backup and connection cap all change in place, each named.
        """
        changed = Server("10.0.0.2:80", weight=2, backup=True, max_connections=10)
        [change] = diff(_proxy(), _proxy(_api(Server("10.0.0.1:80"), changed))).pools_changed
        [server] = change.servers_changed
        self.assertEqual(server.changed, ("weight", "backup", "max_connections"))
        self.assertEqual(set(server.changed), SERVER_FIELDS_IN_PLACE)
        self.assertTrue(server.in_place)

    def test_server_tls_changed(self) -> None:
        """
        A server whose upstream TLS changed is replaced, not changed in place:
        the old one drains.
        """
        secure = Server("10.0.0.2:80", tls=UpstreamTLS(ca="ca.pem"))
        changes = diff(_proxy(), _proxy(_api(Server("10.0.0.1:80"), secure)))
        [server] = changes.pools_changed[0].servers_changed
        self.assertEqual(server.changed, ("tls",))
        self.assertFalse(server.in_place)
        self.assertEqual(
            changes.describe(),
            ["pool api: server 10.0.0.2:80: tls changed (replaced: the old one drains)"],
        )

    def test_server_tls_and_weight_changed(self) -> None:
        """
        A server with an in-place change and a replacing one is replaced.
        """
        server = ServerChange(
            Server("10.0.0.2:80"),
            Server("10.0.0.2:80", weight=2, tls=UpstreamTLS()),
            ("weight", "tls"),
        )
        self.assertFalse(server.in_place)

    def test_server_order_unchanged(self) -> None:
        """
        The same servers in another order are no change: servers match by address.
        """
        reordered = _api(Server("10.0.0.2:80"), Server("10.0.0.1:80"))
        self.assertTrue(diff(_proxy(), _proxy(reordered)).empty)

    def test_settings_changed(self) -> None:
        """
        Each changed pool setting is named, in field order; servers are not
        a setting.
        """
        new = evolve(
            _api(),
            balancer="least_connections",
            health=HealthCheck(path="/healthz"),
            retries=1,
            queue_size=10,
            queue_timeout=5.0,
            keepalive=8,
            keepalive_timeout=2.0,
        )
        changes = diff(_proxy(), _proxy(new))
        [change] = changes.pools_changed
        self.assertEqual(
            change.settings_changed,
            (
                "balancer",
                "health",
                "retries",
                "queue_size",
                "queue_timeout",
                "keepalive",
                "keepalive_timeout",
            ),
        )
        self.assertEqual(
            changes.describe(),
            [
                "pool api: balancer, health, retries, queue_size, queue_timeout,"
                " keepalive, keepalive_timeout changed"
            ],
        )

    def test_health_check_changed(self) -> None:
        """
        A health check with one different argument is a change of C{health}.
        """
        old = _proxy(evolve(_api(), health=HealthCheck(interval=2.0)))
        new = _proxy(evolve(_api(), health=HealthCheck(interval=5.0)))
        [change] = diff(old, new).pools_changed
        self.assertEqual(change.settings_changed, ("health",))

    def test_balancer_provider(self) -> None:
        """
        A balancer given as an L{IBalancer} provider compares by the provider's
        own equality: the same object is no change, and a provider without
        equality is a change when it is made again, as a reloaded file makes it.
        """
        balancer = _FirstAvailable()
        old = _proxy(evolve(_api(), balancer=balancer))
        self.assertTrue(diff(old, _proxy(evolve(_api(), balancer=balancer))).empty)
        again = diff(old, _proxy(evolve(_api(), balancer=_FirstAvailable())))
        self.assertEqual(again.pools_changed[0].settings_changed, ("balancer",))

    def test_pool_change_empty(self) -> None:
        """
        A L{PoolChange} with nothing in it is empty.
        """
        pool = _api()
        self.assertTrue(PoolChange(pool, pool, (), (), (), ()).empty)
        self.assertFalse(PoolChange(pool, pool, (), (), ("10.0.0.9:80",), ()).empty)


class RoutePoolTests(SynchronousTestCase):
    """
    A pool inside a route or a TCP listener compares by name: a change to the
    pool is the pool's, not its listeners'.
    """

    def test_server_change_is_not_route_change(self) -> None:
        """
        Adding a server to a pool changes the pool, while the routes that
        embed it, which no longer compare equal, are unchanged.
        """
        old = _proxy()
        new = _proxy(_api(Server("10.0.0.1:80"), Server("10.0.0.2:80"), Server("10.0.0.3:80")))
        assert isinstance(old.listeners[0], HTTPListener)
        assert isinstance(new.listeners[0], HTTPListener)
        self.assertNotEqual(old.listeners[0].routes, new.listeners[0].routes)
        changes = diff(old, new)
        self.assertEqual([change.name for change in changes.pools_changed], ["api"])
        self.assertEqual(changes.listeners_changed, ())

    def test_pool_setting_change_keeps_listener_with_new_value(self) -> None:
        """
        A kept listener is listed even when unchanged, with the new listener
        value, whose routes carry the new pool: a factory that copied
        C{retries} from its routes is refreshed from it.
        """
        changes = diff(_proxy(), _proxy(evolve(_api(), retries=0)))
        [http, tcp] = changes.listeners_kept
        self.assertEqual(http.changed, ())
        self.assertTrue(http.empty)
        assert isinstance(http.new, HTTPListener)
        self.assertEqual(http.new.routes[0].pool.retries, 0)
        self.assertEqual(tcp.changed, ())

    def test_route_changed(self) -> None:
        """
        A route with another path is a change of the listener's C{routes}.
        """
        old = Proxy([HTTPListener("tcp:8080", routes=[Route(_api(), path="/v1/")])])
        new = Proxy([HTTPListener("tcp:8080", routes=[Route(_api(), path="/v2/")])])
        changes = diff(old, new)
        self.assertEqual(changes.listeners_changed[0].changed, ("routes",))
        self.assertEqual(
            changes.describe(), ["listener tcp:8080: routes changed (kept its socket)"]
        )

    def test_route_to_other_pool(self) -> None:
        """
        A route sent to another pool is a change of C{routes}, though both
        pools exist before and after.
        """
        api, db = _api(), _db()
        old = Proxy([HTTPListener("tcp:8080", routes=[Route(api, path="/a/"), Route(db)])])
        new = Proxy([HTTPListener("tcp:8080", routes=[Route(db, path="/a/"), Route(api)])])
        changes = diff(old, new)
        self.assertEqual(changes.pools_changed, ())
        self.assertEqual(changes.listeners_changed[0].changed, ("routes",))

    def test_routes_reordered(self) -> None:
        """
        Routes are tried in order, so the same routes in another order are a change.
        """
        api = _api()
        first, second = Route(api, path="/a/"), Route(api)
        old = Proxy([HTTPListener("tcp:8080", routes=[first, second])])
        new = Proxy([HTTPListener("tcp:8080", routes=[second, first])])
        self.assertEqual(diff(old, new).listeners_changed[0].changed, ("routes",))

    def test_tcp_pool_server_change(self) -> None:
        """
        A server change in a TCP listener's pool is not a change of the listener.
        """
        changes = diff(_proxy(), _proxy(db=_db(Server("10.0.1.2:5432"))))
        self.assertEqual([change.name for change in changes.pools_changed], ["db"])
        self.assertEqual(changes.listeners_changed, ())

    def test_tcp_pool_switched(self) -> None:
        """
        A TCP listener relaying to another pool has changed its C{pool}.
        """
        other = Pool("db2", [Server("10.0.1.1:5432")])
        changes = diff(_proxy(), _proxy(db=other))
        self.assertEqual(changes.listeners_changed[0].changed, ("pool",))
        self.assertEqual(changes.listeners_changed[0].endpoint, "tcp:15432")
        self.assertEqual(changes.pools_removed, ("db",))

    def test_sni_route_pool_server_change(self) -> None:
        """
        A server change in the pool of an SNI route is not a change of the
        listener's C{sni_routes}; another pattern is.
        """

        def proxy(db: Pool, pattern: str) -> Proxy:
            return Proxy([TCPListener("tcp:443", sni_routes={pattern: db})])

        old = proxy(_db(), "db.example.com")
        bigger = diff(
            old, proxy(_db(Server("10.0.1.1:5432"), Server("10.0.1.2:5432")), "db.example.com")
        )
        self.assertEqual([change.name for change in bigger.pools_changed], ["db"])
        self.assertEqual(bigger.listeners_changed, ())
        renamed = diff(old, proxy(_db(), "*.example.com"))
        self.assertEqual(renamed.listeners_changed[0].changed, ("sni_routes",))


class ListenerTests(SynchronousTestCase):
    """
    Listeners match by the place they listen in, and a kept one keeps its socket.
    """

    def test_settings_changed(self) -> None:
        """
        Each changed setting of an HTTP listener is named, in field order.
        """
        routes = [Route(_api())]
        old = Proxy([HTTPListener("tcp:8443", routes=routes)])
        new = Proxy(
            [
                HTTPListener(
                    "tcp:8443",
                    routes=routes,
                    tls=TLS(certificates=["site.pem"]),
                    limits=Limits(max_body=1024),
                    access_log=AccessLog(format="json"),
                    http2=False,
                )
            ]
        )
        changes = diff(old, new)
        [kept] = changes.listeners_changed
        self.assertEqual(kept.changed, ("tls", "limits", "access_log", "http2"))
        self.assertEqual(
            changes.describe(),
            ["listener tcp:8443: tls, limits, access_log, http2 changed (kept its socket)"],
        )

    def test_tcp_limits_changed(self) -> None:
        """
        A TCP listener's limits are named when they change.
        """
        old = Proxy([TCPListener("tcp:15432", pool=_db())])
        new = Proxy([TCPListener("tcp:15432", pool=_db(), limits=Limits(client_idle_timeout=5))])
        self.assertEqual(diff(old, new).listeners_changed[0].changed, ("limits",))

    def test_listener_added(self) -> None:
        """
        A listener in a new place is added.
        """
        api = _api()
        old = _proxy(api)
        added = HTTPListener("tcp:8081", routes=[Route(api)])
        changes = diff(old, Proxy([*old.listeners, added]))
        self.assertEqual(changes.listeners_added, (added,))
        self.assertEqual(changes.describe(), ["listener tcp:8081 added (HTTP)"])

    def test_listener_removed(self) -> None:
        """
        A listener whose place no new listener takes is removed.
        """
        old = _proxy()
        changes = diff(old, Proxy(old.listeners[:1]))
        self.assertEqual(changes.listeners_removed, old.listeners[1:])
        self.assertEqual(changes.pools_removed, ("db",))
        self.assertEqual(
            changes.describe(),
            ["listener tcp:15432 removed (TCP)", "pool db removed (its servers drain)"],
        )

    def test_listener_moved(self) -> None:
        """
        A listener on another port is one listener removed and another added.
        """
        routes = [Route(_api())]
        old = Proxy([HTTPListener("tcp:8080", routes=routes)])
        new = Proxy([HTTPListener("tcp:8081", routes=routes)])
        changes = diff(old, new)
        self.assertEqual(changes.listeners_removed, old.listeners)
        self.assertEqual(changes.listeners_added, new.listeners)
        self.assertEqual(changes.listeners_kept, ())

    def test_kind_changed(self) -> None:
        """
        A listener that changes between HTTP and TCP in the same place is
        stopped and started, which refuses connections briefly, and says so.
        """
        db = _db()
        old = Proxy([HTTPListener("tcp:8080", routes=[Route(db)])])
        new = Proxy([TCPListener("tcp:8080", pool=db)])
        changes = diff(old, new)
        self.assertEqual(
            changes.listeners_kind_changed, (ListenerKindChange(*old.listeners, *new.listeners),)
        )
        self.assertEqual(changes.listeners_kept, ())
        self.assertEqual((changes.listeners_added, changes.listeners_removed), ((), ()))
        self.assertTrue(changes.refuses_connections)
        self.assertFalse(changes.empty)
        self.assertEqual(
            changes.describe(),
            [
                "listener tcp:8080: HTTP replaced by TCP"
                " (restarted: connections are refused briefly)"
            ],
        )

    def test_changes_refuse_no_connections(self) -> None:
        """
        Changes without a change of kind refuse no connections.
        """
        changes = diff(_proxy(), _proxy(_api(Server("10.0.0.9:80"))))
        self.assertFalse(changes.refuses_connections)

    def test_listener_change_empty(self) -> None:
        """
        A L{ListenerChange} is empty when no field changed.
        """
        [listener] = Proxy([TCPListener("tcp:1", pool=_db())]).listeners
        self.assertTrue(ListenerChange(listener, listener, ()).empty)
        self.assertFalse(ListenerChange(listener, listener, ("limits",)).empty)


class EndpointTests(SynchronousTestCase):
    """
    Endpoints compare by where they listen, as L{Proxy} compares them for
    duplicates, not by how they are written.
    """

    def test_same_place_written_differently(self) -> None:
        """
        C{tcp:8080} and C{tcp:port=8080} listen in the same place: the
        listener is kept with its socket, its C{endpoint} named as changed.
        """
        routes = [Route(_api())]
        old = Proxy([HTTPListener("tcp:8080", routes=routes)])
        new = Proxy([HTTPListener("tcp:port=8080", routes=routes)])
        changes = diff(old, new)
        [kept] = changes.listeners_kept
        self.assertEqual(kept.changed, ("endpoint",))
        self.assertEqual((changes.listeners_added, changes.listeners_removed), ((), ()))
        self.assertEqual(
            changes.describe(), ["listener tcp:port=8080: endpoint changed (kept its socket)"]
        )

    def test_backlog_same_place(self) -> None:
        """
        An endpoint option that does not change the place, such as the
        backlog, keeps the socket.
        """
        routes = [Route(_api())]
        old = Proxy([HTTPListener("tcp:8080", routes=routes)])
        new = Proxy([HTTPListener("tcp:8080:backlog=10", routes=routes)])
        self.assertEqual(diff(old, new).listeners_kept[0].changed, ("endpoint",))

    def test_interface_is_another_place(self) -> None:
        """
        The same port on another interface is another place.
        """
        routes = [Route(_api())]
        old = Proxy([HTTPListener("tcp:8080", routes=routes)])
        new = Proxy([HTTPListener("tcp:8080:interface=127.0.0.1", routes=routes)])
        changes = diff(old, new)
        self.assertEqual(changes.listeners_removed, old.listeners)
        self.assertEqual(changes.listeners_added, new.listeners)

    def test_ipv6_is_another_place(self) -> None:
        """
        C{tcp6:8080} is not the place of C{tcp:8080}.
        """
        routes = [Route(_api())]
        old = Proxy([HTTPListener("tcp:8080", routes=routes)])
        new = Proxy([HTTPListener("tcp6:8080", routes=routes)])
        self.assertEqual(diff(old, new).listeners_added, new.listeners)

    def test_unix_socket(self) -> None:
        """
        A UNIX socket's place is its path.
        """
        routes = [Route(_api())]
        old = Proxy([HTTPListener("unix:/run/txproxy.sock", routes=routes)])
        same = Proxy([HTTPListener("unix:address=/run/txproxy.sock", routes=routes)])
        other = Proxy([HTTPListener("unix:/run/other.sock", routes=routes)])
        self.assertEqual(diff(old, same).listeners_kept[0].changed, ("endpoint",))
        self.assertEqual(diff(old, other).listeners_added, other.listeners)

    def test_port_zero_matched_by_string_in_order(self) -> None:
        """
        Listeners that let the system pick their port have no place: they
        match by endpoint string, first with first, so they keep the ports
        they were given.
        """
        api, db = _api(), _db()
        old = Proxy([HTTPListener("tcp:0", routes=[Route(api)]), TCPListener("tcp:0", pool=db)])
        new = Proxy(
            [
                HTTPListener("tcp:0", routes=[Route(api, path="/v1/")]),
                TCPListener("tcp:0", pool=db),
                TCPListener("tcp:0", pool=db),
            ]
        )
        changes = diff(old, new)
        self.assertEqual(
            [(kept.new, kept.changed) for kept in changes.listeners_kept],
            [(new.listeners[0], ("routes",)), (new.listeners[1], ())],
        )
        self.assertEqual(changes.listeners_added, new.listeners[2:])
        self.assertEqual(changes.listeners_removed, ())


class AdminTests(SynchronousTestCase):
    """
    The admin endpoint is added, removed, moved or changed in place.
    """

    def test_added(self) -> None:
        """
        An admin endpoint where there was none is added.
        """
        admin = Admin()
        changes = diff(_proxy(), _proxy(admin=admin))
        self.assertEqual(changes.admin, AdminChange(None, admin))
        assert changes.admin is not None
        self.assertFalse(changes.admin.moved)
        self.assertEqual(changes.describe(), ["admin tcp:9000:interface=127.0.0.1 added"])

    def test_removed(self) -> None:
        """
        An admin endpoint no longer configured is removed.
        """
        admin = Admin("tcp:9001")
        changes = diff(_proxy(admin=admin), _proxy())
        self.assertEqual(changes.admin, AdminChange(admin, None))
        self.assertEqual(changes.describe(), ["admin tcp:9001 removed"])

    def test_token_changed(self) -> None:
        """
        A new token changes the admin endpoint in place.
        """
        changes = diff(_proxy(admin=Admin()), _proxy(admin=Admin(token="secret")))
        assert changes.admin is not None
        self.assertEqual(changes.admin.changed, ("token",))
        self.assertFalse(changes.admin.moved)
        self.assertEqual(
            changes.describe(),
            ["admin tcp:9000:interface=127.0.0.1: token changed (kept its socket)"],
        )

    def test_moved(self) -> None:
        """
        An admin endpoint in another place has moved, and must restart.
        """
        changes = diff(_proxy(admin=Admin("tcp:9000")), _proxy(admin=Admin("tcp:9001")))
        assert changes.admin is not None
        self.assertTrue(changes.admin.moved)
        self.assertEqual(changes.admin.changed, ("endpoint",))
        self.assertEqual(changes.describe(), ["admin moved from tcp:9000 to tcp:9001"])

    def test_same_place_written_differently(self) -> None:
        """
        An admin endpoint written differently in the same place has not moved.
        """
        changes = diff(_proxy(admin=Admin("tcp:9000")), _proxy(admin=Admin("tcp:port=9000")))
        assert changes.admin is not None
        self.assertFalse(changes.admin.moved)
        self.assertEqual(changes.admin.changed, ("endpoint",))


class ServiceTests(SynchronousTestCase):
    """
    Extra services compare by equality.
    """

    def proxy(self, *services: IServiceFactory) -> Proxy:
        """
        Make a configuration with C{services}.
        """
        return Proxy([TCPListener("tcp:1", pool=_db())], services=services)

    def test_equal_services_kept(self) -> None:
        """
        Services equal by value are kept, though they are other objects.
        """
        self.assertTrue(diff(self.proxy(_Origin("a")), self.proxy(_Origin("a"))).empty)

    def test_services_added_and_removed(self) -> None:
        """
        A service no longer listed is removed, and one newly listed added,
        removed ones first.
        """
        changes = diff(
            self.proxy(_Origin("a"), _Origin("b")), self.proxy(_Origin("b"), _Origin("c"))
        )
        self.assertEqual(changes.services_removed, (_Origin("a"),))
        self.assertEqual(changes.services_added, (_Origin("c"),))
        self.assertEqual(
            changes.describe(),
            ["service _Origin(name='a') removed", "service _Origin(name='c') added"],
        )

    def test_duplicate_matched_once(self) -> None:
        """
        Each service matches at most one: a second equal one is added.
        """
        changes = diff(self.proxy(_Origin("a")), self.proxy(_Origin("a"), _Origin("a")))
        self.assertEqual(changes.services_added, (_Origin("a"),))
        self.assertEqual(changes.services_removed, ())


class SeveralTests(SynchronousTestCase):
    """
    Several changes at once come in the order they are safe to apply in.
    """

    def test_order(self) -> None:
        """
        Services, then new and changed pools, then removed listeners, the
        admin endpoint, changes of kind, changed and added listeners, and
        removed pools last.
        """
        web = Pool("web", [Server("10.0.2.1:80")])
        api = evolve(_api(Server("10.0.0.1:80", weight=2), Server("10.0.0.3:80")), retries=1)
        old_api = _api()
        old = Proxy(
            [
                HTTPListener("tcp:8080", routes=[Route(old_api)]),
                TCPListener("tcp:15432", pool=_db()),
                HTTPListener("tcp:8081", routes=[Route(old_api)]),
            ],
            admin=Admin("tcp:9000"),
            services=[_Origin("a")],
        )
        new = Proxy(
            [
                HTTPListener("tcp:8080", routes=[Route(api, path="/api/"), Route(web)]),
                HTTPListener("tcp:15432", routes=[Route(api)]),
                HTTPListener("tcp:9000", routes=[Route(web)]),
            ],
            admin=Admin("tcp:9001"),
            services=[_Origin("b")],
        )
        changes = diff(old, new)
        self.assertEqual(
            changes.describe(),
            [
                "service _Origin(name='a') removed",
                "service _Origin(name='b') added",
                "pool web added (1 server)",
                "pool api: server 10.0.0.3:80 added",
                "pool api: server 10.0.0.1:80: weight changed (in place)",
                "pool api: retries changed",
                "pool api: server 10.0.0.2:80 removed (drains)",
                "listener tcp:8081 removed (HTTP)",
                "admin moved from tcp:9000 to tcp:9001",
                "listener tcp:15432: TCP replaced by HTTP"
                " (restarted: connections are refused briefly)",
                "listener tcp:8080: routes changed (kept its socket)",
                "listener tcp:9000 added (HTTP)",
                "pool db removed (its servers drain)",
            ],
        )
        self.assertTrue(changes.refuses_connections)
        self.assertEqual([kept.endpoint for kept in changes.listeners_kept], ["tcp:8080"])


class LoadedTests(SynchronousTestCase):
    """
    Configurations loaded from files, as a reload loads them.
    """

    source = """\
from txproxy.config import Admin, HTTPListener, Pool, Proxy, Route, Server
{padding}
api = Pool("api", servers=[Server("127.0.0.1:9001"), Server("127.0.0.1:9002"{weight})])
proxy = Proxy(
    listeners=[HTTPListener("tcp:8080", routes=[Route(pool=api, path="/v1/")])],
    admin=Admin(),
)
"""

    def load(self, padding: str = "", weight: str = "") -> Proxy:
        """
        Write the configuration to a new file and load it.
        """
        path = FilePath(self.mktemp())
        path.setContent(self.source.format(padding=padding, weight=weight).encode("utf-8"))
        return load(path.path)

    def test_reloaded_file_unchanged(self) -> None:
        """
        The same file loaded twice has no changes.
        """
        self.assertTrue(diff(self.load(), self.load()).empty)

    def test_moved_lines_unchanged(self) -> None:
        """
        Where each value was made is not compared: lines added above the
        configuration change nothing.
        """
        self.assertTrue(diff(self.load(), self.load(padding="\n\n# moved\n")).empty)

    def test_reloaded_file_changed(self) -> None:
        """
        A file edited to give a server another weight changes only that server.
        """
        changes = diff(self.load(), self.load(weight=", weight=5"))
        self.assertEqual(
            changes.describe(), ["pool api: server 127.0.0.1:9002: weight changed (in place)"]
        )
