"""
The default configuration: a demo that serves at once, with no backends of your own.

It starts two small origins on 127.0.0.1:8081 and 127.0.0.1:8082, each answering
with its name, and balances a listener on 127.0.0.1:8080 over them, round robin.
Try it:  curl http://127.0.0.1:8080/   (twice: origin a, then origin b)

Copy this file to start your own configuration: `twistd -n txproxy --config my.py`.
"""

from txproxy.config import Pool, Proxy, Server, TCPListener
from txproxy.demo import Origin

demo = Pool(
    "demo",
    servers=[Server("127.0.0.1:8081"), Server("127.0.0.1:8082")],
    balancer="round_robin",
)

proxy = Proxy(
    listeners=[TCPListener("tcp:8080:interface=127.0.0.1", pool=demo)],
    services=[Origin("127.0.0.1:8081", name="a"), Origin("127.0.0.1:8082", name="b")],
)
