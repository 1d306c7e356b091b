"""The network data plane of a host: bridges, taps, DHCP namespaces, routers, the external bridge.

* :mod:`agents.network.linux`: kernel primitives (pyroute2 for links, addresses, routes and
  namespaces; ``nft`` for NAT tables);
* :mod:`agents.network.l2`: a bridge per network (with its uplink), taps, the external bridge;
* :mod:`agents.network.dhcp`: a dnsmasq per network in its own namespace;
* :mod:`agents.network.router`: a namespace per router with its legs, routes and NAT;
* :mod:`agents.network.driver`: the driver the tasks call (and its extension seam), with
  :mod:`agents.network.fake` for the control plane's unit tests;
* :mod:`agents.network.firewall`, :mod:`agents.network.metadata`: security groups and the
  metadata service, extensions of the driver;
* :mod:`agents.network.tasks`: the Celery entry points (``agents.names.TASK_NETWORK_*``).
"""


class NetworkError(Exception):
    """A data-plane operation failed; the message says what and why."""
