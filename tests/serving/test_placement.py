"""The registry's placement rule and the count of replicas waiting for resources, as pure functions
(no Ray cluster). ``tests/cluster/test_cluster.py`` checks the rule on a real several-node cluster."""

from __future__ import annotations

import pytest
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from serving.placement import CONTROL_PLANE_RESOURCE, count_waiting, placed, registry_options, resource_name

pytestmark = pytest.mark.unit
NODE_ID = "ab" * 28  # the shape of a Ray node id (28 bytes in hex)


def test_registry_asks_for_the_control_plane_resource_when_a_node_advertises_it():
    options = registry_options("control_plane", {"CPU": 8.0, "GPU": 4.0, "control_plane": 1.0}, NODE_ID)
    assert set(options) == {"resources"}
    assert 0 < options["resources"]["control_plane"] <= 1


def test_registry_falls_back_beside_the_caller_on_a_cluster_without_the_resource():
    options = registry_options("control_plane", {"CPU": 2.0}, NODE_ID)
    strategy = options["scheduling_strategy"]
    assert isinstance(strategy, NodeAffinitySchedulingStrategy)
    assert (strategy.node_id, strategy.soft) == (NODE_ID, True)
    assert "resources" not in options


def test_an_empty_resource_name_turns_the_rule_off():
    assert "scheduling_strategy" in registry_options("", {"": 1.0, "control_plane": 1.0}, NODE_ID)
    assert resource_name({"registry_resource": ""}) == ""
    assert resource_name({}) == CONTROL_PLANE_RESOURCE


def test_waiting_replicas_are_counted_per_deployment_of_this_application_only():
    names = [
        "SERVE_REPLICA::qwen-image#TextToImage#a1",
        "SERVE_REPLICA::qwen-image#TextToImage#b2",
        "SERVE_REPLICA::qwen-image#ImageEdit#c3",
        "SERVE_REPLICA::other#TextToImage#d4",
        "SERVE_CONTROLLER_ACTOR",
        "qwen-image-registry",
    ]
    assert count_waiting("qwen-image", names) == {"TextToImage": 2, "ImageEdit": 1}


def test_only_a_replica_without_a_worker_on_a_node_counts_as_waiting():
    # A replica loading its model on a node is PENDING_CREATION too, but it is starting, not waiting.
    assert placed({"IPAddress": "10.0.0.7", "Port": 41234, "NodeID": NODE_ID})
    # Ray's actor table for one no node can take: the raylet holding it pending, but no worker.
    assert not placed({"IPAddress": "", "Port": 0, "NodeID": NODE_ID})
    assert not placed(None) and not placed({})
