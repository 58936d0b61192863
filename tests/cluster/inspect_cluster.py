"""Prints, as one JSON line, the nodes and actors of the Ray cluster at ``argv[1]`` (GCS address).

Run by the cluster harness in a subprocess with the cluster's environment (its token), so that the
test process never joins that cluster and the suite's own local Ray is left alone.
"""

from __future__ import annotations

import json
import logging
import sys

import ray


def main(address: str) -> None:
    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        nodes = [
            {
                "node_id": n["NodeID"],
                "node_manager_port": n["NodeManagerPort"],
                "alive": n["Alive"],
                "gpus": n["Resources"].get("GPU", 0),
                "control_plane": n["Resources"].get("control_plane", 0),
            }
            for n in ray.nodes()
        ]
        actors = [
            {
                "name": a["Name"],
                "class": a["ActorClassName"],
                "state": a["State"],
                "node_id": a["Address"]["NodeID"],
                "pid": a["Pid"],
                "restarts": a["NumRestarts"],
            }
            for a in ray._private.state.actors().values()
        ]
    finally:
        ray.shutdown()
    print(json.dumps({"nodes": nodes, "actors": actors}))


if __name__ == "__main__":
    main(sys.argv[1])
