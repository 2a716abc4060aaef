"""The node agent (upstream's kubelet): runs the pods bound to one node as runc containers.

One file per concern, named after upstream's::

    agent.py            `Agent`: the process (`kubeling agent`): client, informers, run(stop)
    kubelet.py          the sync loop: pod informer -> pod workers -> syncPod / syncTerminatingPod
    podworkers.py       one worker per pod UID; the pod state diagram lives there
    kuberuntime.py      computePodActions: which sandbox/containers to (re)start or kill
    status.py           the status manager: builds PodStatus, patches it to the API
    nodestatus.py       registration, capacity/allocatable, conditions, nodeInfo, addresses
    nodelease.py        the heartbeat Lease in kube-node-lease
    envvars.py          env, envFrom, valueFrom and $(VAR) expansion
    lifecycle.py        postStart / preStop hooks
    prober/             liveness, readiness and startup probes (exec, httpGet, tcpSocket, grpc)
    volumes/            one file per volume type, plus the atomic writer
    images/             references, OCI distribution client, content store, pull policy, GC
    network/            bridge + veth + host-local IPAM from podCIDR, hostPort
    runtime/            the CRI-shaped boundary (__init__), runc, hollow
    server/             the agent's HTTPS endpoint: logs, exec, attach, portForward, stats
    streaming/          WebSocket channel and SPDY/3.1 protocols shared with the API server
    token.py            the service-account token manager for projected volumes
"""
