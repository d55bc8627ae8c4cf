"""
A balancer of your own: any object providing IBalancer can be a pool's balancer.

This one sends every connection to the first available server in configuration
order (HAProxy's "balance first"): active/passive failover, where the second
server only works while the first is down or full.

    twistd -n txproxy --config etc/examples/custom_balancer.py
"""

from zope.interface import implementer

from txproxy.config import Pool, Proxy, Server, TCPListener
from txproxy.demo import Origin
from txproxy.interfaces import IBalancer


@implementer(IBalancer)
class FirstAvailable:
    """
    Pick the first server that may take work, in configuration order.
    """

    def pick(self, servers, context):
        for server in servers:
            if server.available and server.address not in context.exclude:
                return server
        return None


pool = Pool(
    "failover",
    servers=[Server("127.0.0.1:8081", max_connections=100), Server("127.0.0.1:8082")],
    balancer=FirstAvailable(),
)

proxy = Proxy(
    listeners=[TCPListener("tcp:8080:interface=127.0.0.1", pool=pool)],
    services=[Origin("127.0.0.1:8081", name="active"), Origin("127.0.0.1:8082", name="passive")],
)
