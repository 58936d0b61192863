"""Steers the task registry between control-plane nodes of the Ray cluster at ``argv[1]`` (GCS address).

``hold <node_id>``: a detached placeholder actor takes all of that node's ``control_plane`` resource,
so that a registry created meanwhile can only land on another control-plane node. ``release``: the
placeholder goes, and the node may take the registry again (when it restarts). Run by the cluster
harness in a subprocess with the cluster's environment, like ``inspect_cluster``.
"""

from __future__ import annotations

import logging
import sys

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

NAME, NAMESPACE = "qis-test-control-plane-hold", "qis-test"


@ray.remote(num_cpus=0)
class Hold:
    def ready(self) -> bool:
        return True


def main(address: str, command: str, *args: str) -> None:
    ray.init(address=address, namespace=NAMESPACE, logging_level=logging.ERROR, log_to_driver=False)
    try:
        if command == "hold":
            hold = Hold.options(  # type: ignore[attr-defined]
                name=NAME,
                lifetime="detached",
                resources={"control_plane": 1},
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=args[0], soft=False),
            ).remote()
            ray.get(hold.ready.remote(), timeout=60)
        elif command == "release":
            ray.kill(ray.get_actor(NAME))
        else:
            raise SystemExit(f"unknown command {command!r}")
    finally:
        ray.shutdown()
    print("ok")


if __name__ == "__main__":
    main(*sys.argv[1:])
