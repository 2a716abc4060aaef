"""The scheduler (upstream's kube-scheduler): binds unscheduled pods to nodes.

One file per concept, named after upstream's ``pkg/scheduler``::

    server.py         the process (`kubeling scheduler`): client, informers, leader election, run(stop)
    scheduler.py      `Scheduler`: informer handlers, the scheduling loop, binding cycle, failure handling
    schedule_one.py   the placement algorithm: filter (percentageOfNodesToScore), score, select host, FitError
    queue.py          `SchedulingQueue`: activeQ / backoffQ / unschedulablePods, queueing hints, nominated pods
    cache.py          `Cache`: nodes, bound and assumed pods (assume / confirm / forget / expire)
    snapshot.py       `Snapshot`: the per-cycle node list, refreshed by NodeInfo generation
    profile.py        profiles: schedulerName -> Framework, KubeSchedulerConfiguration's plugin sets
    preemption.py     the preemption `Evaluator` (candidates, victims, PDBs) DefaultPreemption runs
    metrics.py        prometheus metrics (attempt duration, pending pods)
    framework/        the plugin contract (interface, types) and its runtime (`Framework`, the Handle)
    plugins/          the in-tree plugins and their registry
"""
