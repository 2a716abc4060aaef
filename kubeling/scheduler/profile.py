"""Profiles: ``schedulerName`` → `Framework` (upstream's ``pkg/scheduler/profile`` plus the
part of ``KubeSchedulerConfiguration`` v1 that shapes profiles).

Configuration (a dict, as the YAML file's ``profiles``)::

    profiles:
    - schedulerName: default-scheduler        # the default profile
      plugins:
        score:
          disabled: [{name: ImageLocality}]     # "*" disables every default at that point
          enabled: [{name: MyPlugin, weight: 3}]
      pluginConfig:
      - name: NodeResourcesFit
        args: {scoringStrategy: {type: MostAllocated}}
    percentageOfNodesToScore: 0                 # top level (0: adaptive)

Each profile starts from the registry's default plugins; ``disabled`` removes, ``enabled`` appends
(after the defaults, as upstream merges). ``multiPoint`` entries are expanded to every point the
plugin implements. Profiles must share one QueueSort plugin (one queue serves them all).
"""

from __future__ import annotations

import copy
from typing import Any

from kubeling.scheduler.framework.interface import EXTENSION_POINTS, PluginSet
from kubeling.scheduler.framework.runtime import Framework

DEFAULT_SCHEDULER_NAME = "default-scheduler"

# v1 config spelling -> our extension point names
POINT_NAMES = {
    "queueSort": "queue_sort", "preEnqueue": "pre_enqueue", "preFilter": "pre_filter", "filter": "filter",
    "postFilter": "post_filter", "preScore": "pre_score", "score": "score", "reserve": "reserve",
    "permit": "permit", "preBind": "pre_bind", "bind": "bind", "postBind": "post_bind",
}


def _implements(cls: type, point: str) -> bool:
    return all(callable(getattr(cls, m, None)) for m in EXTENSION_POINTS[point])


def merge_plugins(defaults: dict[str, PluginSet], cfg: dict | None, registry: dict[str, type]) -> dict[str, PluginSet]:
    """Apply a profile's ``plugins`` section to the defaults (see the module docstring)."""
    out = {p: PluginSet(list(ps.enabled), dict(ps.weights)) for p, ps in defaults.items()}
    for p in EXTENSION_POINTS:
        out.setdefault(p, PluginSet())
    cfg = cfg or {}
    multi = cfg.get("multiPoint") or {}
    multi_disabled = {d.get("name") for d in multi.get("disabled") or ()}
    if "*" in multi_disabled:
        out = {p: PluginSet() for p in EXTENSION_POINTS}
    else:
        for ps in out.values():
            ps.enabled = [n for n in ps.enabled if n not in multi_disabled]
    for e in multi.get("enabled") or ():
        name = e["name"]
        cls = registry.get(name)
        if cls is None:
            raise ValueError(f"plugin {name!r} is not in the registry")
        for p, ps in out.items():
            if _implements(cls, p) and name not in ps.enabled:
                ps.enabled.append(name)
                if p == "score":
                    ps.weights[name] = int(e.get("weight") or ps.weights.get(name) or 1)
    for key, point in POINT_NAMES.items():
        section = cfg.get(key)
        if not section:
            continue
        ps = out[point]
        disabled = {d.get("name") for d in section.get("disabled") or ()}
        if "*" in disabled:
            ps.enabled = []
        else:
            ps.enabled = [n for n in ps.enabled if n not in disabled]
        for e in section.get("enabled") or ():
            name = e["name"]
            if name in ps.enabled:
                ps.enabled.remove(name)   # re-enabling moves it to the end, with its new weight
            ps.enabled.append(name)
            if point == "score":
                ps.weights[name] = int(e.get("weight") or 1)
    return out


def build_profiles(config: dict | None, *, registry: dict[str, type] | None = None,
                   default_plugins: dict[str, PluginSet] | None = None,
                   default_args: dict[str, dict] | None = None, **handle: Any) -> dict[str, Framework]:
    """``{schedulerName: Framework}``; ``handle`` is passed to every Framework (client, recorder,
    snapshot, pod_lister, namespace_lister, nominator)."""
    if registry is None or default_plugins is None or default_args is None:
        from kubeling.scheduler.plugins import registry as in_tree
        registry = in_tree.IN_TREE_REGISTRY if registry is None else registry
        default_plugins = in_tree.default_plugins() if default_plugins is None else default_plugins
        default_args = in_tree.default_plugin_args() if default_args is None else default_args
    config = config or {}
    profiles_cfg = config.get("profiles") or [{"schedulerName": DEFAULT_SCHEDULER_NAME}]
    out: dict[str, Framework] = {}
    queue_sorts = set()
    for pc in profiles_cfg:
        name = pc.get("schedulerName") or DEFAULT_SCHEDULER_NAME
        if name in out:
            raise ValueError(f"duplicate profile with scheduler name {name!r}")
        plugins = merge_plugins(default_plugins, pc.get("plugins"), registry)
        args = copy.deepcopy(default_args)
        for item in pc.get("pluginConfig") or ():
            args[item["name"]] = {**args.get(item["name"], {}), **(item.get("args") or {})}
        pct = pc.get("percentageOfNodesToScore")
        out[name] = Framework(registry, plugins, profile_name=name, plugin_config=args,
                              percentage_of_nodes_to_score=pct, **handle)
        queue_sorts.add(tuple(plugins["queue_sort"].enabled))
    if len(queue_sorts) > 1:
        raise ValueError("every profile must use the same queue sort plugin")
    return out
