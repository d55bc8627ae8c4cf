"""
The default configuration: a demo that serves at once, with no backends of your own.

It starts two small origins on 127.0.0.1:8081 and 127.0.0.1:8082, each answering
with its name, and an HTTP listener on 127.0.0.1:8080 that balances over them:

    curl http://127.0.0.1:8080/             origin a, then origin b (round robin)
    curl http://127.0.0.1:8080/api/users    the /api/ prefix is stripped: origin sees /users
    curl http://127.0.0.1:8080/b/           always origin b
    curl http://127.0.0.1:9000/pools        the admin API: each server's state (JSON)

Copy this file to start your own configuration: `twistd -n txproxy --config my.py`.
"""

from txproxy.config import AccessLog, Admin, HealthCheck, HTTPListener, Pool, Proxy, Route, Server
from txproxy.demo import Origin

demo = Pool(
    "demo",
    servers=[Server("127.0.0.1:8081"), Server("127.0.0.1:8082")],
    balancer="round_robin",
    health=HealthCheck(path="/", interval=2.0, timeout=1.0, rise=2, fall=2),
)
only_b = Pool("only-b", servers=[Server("127.0.0.1:8082")])

proxy = Proxy(
    listeners=[
        HTTPListener(
            "tcp:8080:interface=127.0.0.1",
            routes=[
                Route(demo, path="/api/", strip_prefix=True),
                Route(only_b, path="/b/"),
                Route(demo),
            ],
            access_log=AccessLog(),  # one line per request, in the twistd log
        ),
    ],
    # The admin API, on 127.0.0.1 only; give it a token= where others can reach it.
    admin=Admin("tcp:9000:interface=127.0.0.1"),
    services=[Origin("127.0.0.1:8081", name="a"), Origin("127.0.0.1:8082", name="b")],
)
