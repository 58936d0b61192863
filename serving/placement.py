"""Where the control plane runs, by rule: the task registry on a CPU node, never on a GPU node by luck.

The registry asks for no CPU (it waits on the database and on handles), so Ray may place it on any
node, a GPU node included; a GPU node the autoscaler gives back after its idle minutes then takes the
registry with it. The rule: the nodes meant for the control plane (the head, CPU pods) advertise a
custom resource, ``ray start --resources='{"control_plane": 1}'`` (KubeRay: ``rayStartParams.resources``),
and the registry asks for a sliver of it, so Ray can only place it, and restart it, there.

A cluster where no node advertises the resource (``make run``, the test suite's local Ray) keeps the
old behaviour: beside the ingress that creates it, softly, with a log line that says so.

Read-only helpers for ``/health`` and the metrics live here too: where the registry runs, and which
model replicas wait for resources (Ray's actor table: a replica actor ``PENDING_CREATION`` with no node
assigned yet: none has the GPUs/CPUs it asks for).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import ray

log = logging.getLogger("serving.placement")

# The custom resource control-plane nodes advertise (settings: REGISTRY_RESOURCE; empty turns the rule off).
CONTROL_PLANE_RESOURCE = "control_plane"
# What the registry asks for: any positive amount works; a sliver leaves room for other control actors.
REGISTRY_RESOURCE_AMOUNT = 0.01
# An ingress starting while the registry restarts waits this long for it: a lost node is declared dead
# after ~15 s, then Ray restarts the actor elsewhere and it reconnects to the database.
REGISTRY_RESTART_WAIT_S = 120.0
# How often that wait says so in the ingress's log.
REGISTRY_WAIT_LOG_S = 5.0
# One ping of a registry that is starting; a registry Ray cannot place yet never answers.
REGISTRY_PING_TIMEOUT_S = 5.0
# Ray's name prefix of Serve replica actors: SERVE_REPLICA::<app>#<deployment>#<id>
_REPLICA_PREFIX = "SERVE_REPLICA::"


def resource_name(settings_dict: Mapping[str, Any]) -> str:
    """The control-plane resource this application's registry asks for ('' when the rule is off)."""
    return str(settings_dict.get("registry_resource", CONTROL_PLANE_RESOURCE) or "").strip()


def registry_options(resource: str, cluster_resources: Mapping[str, float], caller_node_id: str) -> dict[str, Any]:
    """Actor options placing the registry: on a node with ``resource`` when the cluster has one,
    else beside ``caller_node_id`` (soft: anywhere if that node is gone)."""
    if resource and cluster_resources.get(resource, 0) > 0:
        return {"resources": {resource: REGISTRY_RESOURCE_AMOUNT}}
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=caller_node_id, soft=True)}


def registry_placement(settings_dict: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`registry_options` for this cluster, logging which rule placed the registry."""
    resource = resource_name(settings_dict)
    options = registry_options(resource, ray.cluster_resources(), ray.get_runtime_context().get_node_id())
    if "resources" in options:
        log.info("task registry placed on a node advertising the %r resource", resource)
    elif resource:
        log.warning(
            "no node advertises the %r resource: the task registry runs beside this ingress "
            "(start control-plane nodes with --resources='{\"%s\": 1}' to pin it there)",
            resource,
            resource,
        )
    return options


def registry_location(handle: Any, resource: str = CONTROL_PLANE_RESOURCE) -> dict[str, Any]:
    """Where the registry actor behind ``handle`` runs: its node (id, address), whether that node
    advertises GPUs or the control-plane resource, and the actor's state. Blocking (reads the GCS)."""
    info = ray._private.state.actors(actor_id=handle._actor_id.hex())
    node_id = (info.get("Address") or {}).get("NodeID", "")
    node = next((n for n in ray.nodes() if n.get("NodeID") == node_id and n.get("Alive")), None)
    resources = (node or {}).get("Resources", {})
    return {
        "state": info.get("State", "UNKNOWN"),
        "node_id": node_id if node else None,
        "node_ip": (node or {}).get("NodeManagerAddress"),
        "node_gpus": resources.get("GPU", 0),
        "control_plane": bool(resource) and resources.get(resource, 0) > 0,
        "restarts": info.get("NumRestarts", 0),
    }


def waiting_replicas(app_name: str) -> dict[str, int]:
    """Per deployment of ``app_name``: replica actors Ray has not placed yet (no node has the
    resources they ask for, GPUs above all). A replica on a node, still loading its model, is
    ``PENDING_CREATION`` too but has a worker there: that one is starting, not waiting. Blocking
    (reads the GCS's actor table)."""
    pending = ray._private.state.actors(actor_state_name="PENDING_CREATION")
    return count_waiting(app_name, (a.get("Name", "") for a in pending.values() if not placed(a.get("Address"))))


def placed(address: Any) -> bool:
    """Whether an actor table's ``Address`` names a worker process on a node. One Ray cannot place
    has none (no IP, port 0), though its ``NodeID`` may name the raylet that holds it pending."""
    address = address or {}
    return bool(address.get("IPAddress")) and bool(address.get("Port"))


def count_waiting(app_name: str, actor_names: Any) -> dict[str, int]:
    """Counts ``SERVE_REPLICA::<app_name>#<deployment>#…`` names per deployment."""
    prefix = f"{_REPLICA_PREFIX}{app_name}#"
    counts: dict[str, int] = {}
    for name in actor_names:
        if name.startswith(prefix):
            deployment = name[len(prefix) :].split("#", 1)[0]
            counts[deployment] = counts.get(deployment, 0) + 1
    return counts
