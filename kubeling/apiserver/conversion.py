"""Conversion between a served version and the version a resource is stored in.

Each resource's strategy knows its own versions (legacy Deployments, autoscaling/v1,
events.k8s.io/v1, custom resources); these two functions are the entry points for code that
holds only a `Served` (list, watch, the watch cache).
"""

from __future__ import annotations

from kubeling.apiserver.resources import Served


def to_storage(served: Served, obj: dict) -> dict:
    return served.strategy.to_storage(obj, served)


def from_storage(served: Served, obj: dict) -> dict:
    """A stored object in ``served``'s version. May return ``obj`` itself: never mutate the result
    of a shared (cached) object."""
    return served.strategy.from_storage(obj, served)
