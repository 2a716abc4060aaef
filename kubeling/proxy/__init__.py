"""kube-proxy (``kubeling proxy --proxy-mode userspace|iptables|nftables|ipvs``), run on every node.

::

    types.py                  the contract: ServicePortName, ServicePort, Endpoint, NodeContext,
                              categorize_endpoints, and the `Proxier` protocol every mode implements
    servicechangetracker.py   Service -> {ServicePortName: ServicePort} (upstream's ServiceChangeTracker)
    endpointschangetracker.py EndpointSlices -> {ServicePortName: [Endpoint]} (EndpointsChangeTracker)
    runner.py                 BoundedFrequencyRunner: coalesced syncs, min/max sync period, retries
    server.py                 the process: informers (services, endpointslices, nodes) -> trackers
                              -> proxier.sync; healthz (:10256), metrics (:10249)
    metrics.py                sync_proxy_rules_duration_seconds, network_programming_duration_seconds, ...
    userspace.py              asyncio TCP/UDP relays: true round robin, ClientIP affinity
    iptables.py               KUBE-SERVICES / KUBE-SVC-* / KUBE-SEP-* chains through iptables-restore
    nftables.py               table ``ip kube-proxy``, verdict maps, one ``nft -f`` transaction
    ipvs.py                   IPVS virtual servers over netlink (refuses to start without ip_vs)
    conntrack.py              clearing stale UDP conntrack entries when endpoints go (netlink)
    healthcheck.py            /healthz, /livez (:10256) and health check node ports (ETP Local)
    cleanup.py                ``kubeling proxy --cleanup``: every mode's ``cleanup()``

Every mode is given the whole state (`types`); none reads API objects. The agent starts
``kubeling proxy`` as its child (k3s runs kube-proxy beside the kubelet); ``kubeling node
cleanup`` calls each mode's ``cleanup``.
"""
