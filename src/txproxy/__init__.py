"""
txproxy: a reverse proxy and load balancer for HTTP and TCP, configured in Python.
"""

__version__ = "0.1.0"
