"""A fault-injecting HTTP reverse proxy on loopback, for tests against flaky registries and storage.

    with FaultProxy(registry.url) as proxy:
        proxy.add(Fault.cut_after(1000), path=r"/blobs/", times=1)
        proxy.add(Fault.respond(429, {"Retry-After": "2"}), method="GET", times=2)
        ...  # point the client at proxy.url
        assert [f.rule.fault for f in proxy.firings] == ...

`python -m tools.faultproxy --help` runs one by hand.
"""

from tools.faultproxy.faults import Fault, Firing, Rule
from tools.faultproxy.server import FaultProxy, FaultProxyFactory

__all__ = ["Fault", "FaultProxy", "FaultProxyFactory", "Firing", "Rule"]
