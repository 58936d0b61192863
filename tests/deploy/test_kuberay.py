"""deploy/kuberay: manifests that parse, the same application as serve_config.yaml, secrets by reference,
and a RayService that KubeRay's own CRD schema accepts whole."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serving.placement import CONTROL_PLANE_RESOURCE
from tests.deploy.config import (
    KUBERAY_DIR,
    MODEL_DEPLOYMENTS,
    REDIS_PASSWORD,
    SECRET_NAME,
    SECRETS,
    deployments,
    kuberay_documents,
    serve_config,
    the,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def service() -> dict:
    return the("RayService")


@pytest.fixture(scope="module")
def embedded(service) -> dict:
    return yaml.safe_load(service["spec"]["serveConfigV2"])


def ray_pod_specs(service) -> dict[str, dict]:
    cluster = service["spec"]["rayClusterConfig"]
    pods = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    for group in cluster["workerGroupSpecs"]:
        pods[group["groupName"]] = group["template"]["spec"]
    return pods


def ray_container(pod: dict) -> dict:
    return pod["containers"][0]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_every_manifest_parses_into_named_kubernetes_objects():
    documents = kuberay_documents()
    assert {path.name for path, _ in documents} >= {"rayservice.yaml", "secrets.example.yaml", "pvc.yaml", "redis.yaml"}
    assert {path for path, _ in documents} == set(KUBERAY_DIR.glob("*.yaml"))  # none is empty
    for path, doc in documents:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), path.name


def test_the_rayservice_is_ray_io_v1(service):
    assert service["apiVersion"] == "ray.io/v1"


def test_embedded_serve_config_is_valid(embedded):
    ServeDeploySchema.model_validate(embedded)


def test_embedded_application_is_the_one_in_serve_config_yaml(embedded):
    """The same application; only the model replicas' CPUs differ, because the GPU pods offer none."""
    [mine], [theirs] = embedded["applications"], serve_config()["applications"]
    for field in ("name", "route_prefix", "import_path", "args"):
        assert mine[field] == theirs[field], field
    mine_deployments, theirs_deployments = deployments(mine), copy.deepcopy(deployments(theirs))
    for name in MODEL_DEPLOYMENTS:
        assert mine_deployments[name]["ray_actor_options"]["num_cpus"] == 0
        theirs_deployments[name]["ray_actor_options"]["num_cpus"] = 0
    assert mine_deployments == theirs_deployments
    assert embedded["http_options"] == serve_config()["http_options"]


@pytest.mark.parametrize("secret", SECRETS)
def test_every_ray_container_takes_each_secret_from_the_secret(service, secret):
    for group, pod in ray_pod_specs(service).items():
        variable = env_of(ray_container(pod)).get(secret)
        assert variable is not None, f"{group} lacks {secret}"
        assert "value" not in variable
        assert variable["valueFrom"]["secretKeyRef"] == {"name": SECRET_NAME, "key": secret}, group


def test_the_example_secret_defines_each_secret_the_pods_read():
    secret = the("Secret")
    assert secret["metadata"]["name"] == SECRET_NAME
    assert set(secret["stringData"]) == {*SECRETS, REDIS_PASSWORD}


def test_every_ray_pod_mounts_the_shared_volume_as_data_dir(service):
    claim = the("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for group, pod in ray_pod_specs(service).items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        container = ray_container(pod)
        data_dir = env_of(container)["DATA_DIR"]["value"]
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == data_dir]
        assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"], group


def test_ray_control_plane_uses_token_auth_and_stays_inside_the_cluster(service):
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}
    major, minor = map(int, cluster["rayVersion"].split(".")[:2])
    assert (major, minor) >= (2, 52)  # the first Ray with token authentication
    head = cluster["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert "ingress" not in {k.lower() for k in head}


def test_the_head_has_no_gpu(service):
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    resources = ray_container(head["template"]["spec"])["resources"]
    assert "nvidia.com/gpu" not in {**resources.get("requests", {}), **resources.get("limits", {})}


def test_gpu_workers_have_one_gpu_each_and_room_for_every_model_replica(service, embedded):
    [group] = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    container = ray_container(group["template"]["spec"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    models = [deployments(embedded["applications"][0])[name]["autoscaling_config"] for name in MODEL_DEPLOYMENTS]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert group["minReplicas"] <= sum(m["min_replicas"] for m in models)
    assert group["maxReplicas"] >= sum(m["max_replicas"] for m in models)


def test_gpu_workers_outlive_a_graceful_replica_shutdown(service, embedded):
    [group] = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    longest = max(
        deployments(embedded["applications"][0])[name]["graceful_shutdown_timeout_s"] for name in MODEL_DEPLOYMENTS
    )
    assert group["template"]["spec"]["terminationGracePeriodSeconds"] > longest


def test_gpu_workers_keep_kuberays_readiness_probe_of_raylet_and_serve_proxy(service):
    """KubeRay gives a RayService's worker a probe of its raylet and its own Serve proxy (/-/healthz on
    the port named serve) unless the template has one; /health would answer 200 when degraded."""
    [group] = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    container = ray_container(group["template"]["spec"])
    assert "readinessProbe" not in container
    assert {"containerPort": 8000, "name": "serve"} in container["ports"]


def test_gpu_workers_use_kuberays_shared_memory_and_a_deliberate_object_store(service):
    """Without a /dev/shm of our own, KubeRay mounts one as large as the container's memory; the object
    store's size is then what rayStartParams says, not a cap from a smaller volume."""
    [group] = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    pod = group["template"]["spec"]
    container = ray_container(pod)
    assert "/dev/shm" not in {m["mountPath"] for m in container.get("volumeMounts", [])}
    assert not [v for v in pod["volumes"] if v.get("emptyDir", {}).get("medium") == "Memory"]
    object_store = int(group["rayStartParams"]["object-store-memory"])
    memory_gib = int(container["resources"]["limits"]["memory"].removesuffix("Gi"))
    assert 1 << 30 <= object_store <= (memory_gib << 30) // 4


def test_only_model_replicas_fit_on_gpu_workers(service, embedded):
    """GPU pods offer Ray no CPUs, so the Ingress (which needs CPUs) is placed on the head; the model
    replicas need none there, and the head has room for every Ingress replica."""
    cluster = service["spec"]["rayClusterConfig"]
    [group] = cluster["workerGroupSpecs"]
    assert group["rayStartParams"]["num-cpus"] == "0"
    app = deployments(embedded["applications"][0])
    for name in MODEL_DEPLOYMENTS:
        assert app[name]["ray_actor_options"] == {"num_gpus": 1, "num_cpus": 0}
    ingress = app["Ingress"]
    assert ingress["ray_actor_options"]["num_cpus"] > 0
    assert float(cluster["headGroupSpec"]["rayStartParams"]["num-cpus"]) >= (
        ingress["num_replicas"] * ingress["ray_actor_options"]["num_cpus"]
    )


def test_the_registry_is_pinned_to_the_head_by_the_control_plane_resource(service):
    """serving.placement puts the registry on a node advertising ``control_plane``: only the head does."""
    cluster = service["spec"]["rayClusterConfig"]
    # KubeRay passes the value to `ray start --resources=…` as it is: a quoted JSON object
    head = json.loads(json.loads(cluster["headGroupSpec"]["rayStartParams"]["resources"]))
    assert head == {CONTROL_PLANE_RESOURCE: 1}
    for group in cluster["workerGroupSpecs"]:
        assert CONTROL_PLANE_RESOURCE not in group["rayStartParams"].get("resources", "")


def test_gcs_fault_tolerance_uses_the_example_redis_with_the_password_from_the_secret(service):
    options = service["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    host, port = options["redisAddress"].split(":")
    [redis_service] = [d for _, d in kuberay_documents() if d["kind"] == "Service" and d["metadata"]["name"] == host]
    assert int(port) in {p["port"] for p in redis_service["spec"]["ports"]}
    reference = {"name": SECRET_NAME, "key": REDIS_PASSWORD}
    assert options["redisPassword"] == {"valueFrom": {"secretKeyRef": reference}}
    [redis] = [d for _, d in kuberay_documents() if d["kind"] == "StatefulSet" and d["metadata"]["name"] == host]
    assert redis["spec"]["template"]["metadata"]["labels"].items() >= redis_service["spec"]["selector"].items()
    [container] = redis["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == reference
    assert "requirepass" in " ".join(container["command"])


def test_a_cluster_change_starts_a_new_cluster_before_the_old_one_goes(service):
    assert service["spec"]["upgradeStrategy"] == {"type": "NewCluster"}


# ---------------------------------------------------------------- KubeRay's CRD schema

CRD_SCHEMA_FILE = Path(__file__).with_name("kuberay_v1.7.0_rayservice_schema.json")


def without_pruning(schema: dict) -> dict:
    """The CRD's schema as Kubernetes applies it: an object schema with ``properties`` and neither
    ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` drops any other field
    silently; here such a field is an error instead."""
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


@pytest.fixture(scope="module")
def rayservice_validator() -> jsonschema.Draft7Validator:
    document = json.loads(CRD_SCHEMA_FILE.read_text())
    assert (document["crd"], document["version"], document["kuberay"]) == ("rayservices.ray.io", "v1", "v1.7.0")
    return jsonschema.Draft7Validator(without_pruning(document["openAPIV3Schema"]))


def violations(validator, document) -> list[str]:
    return [f"{'.'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def test_rayservice_is_valid_for_kuberay_and_nothing_in_it_would_be_pruned(service, rayservice_validator):
    assert violations(rayservice_validator, service) == []


@pytest.mark.parametrize(
    "path, field",
    [
        (("spec", "rayClusterConfig", "workerGroupSpecs", 0), "rayStartParam"),  # misspelt: would vanish
        (("spec", "rayClusterConfig", "headGroupSpec", "template", "spec", "containers", 0), "readinessprobe"),
        (("spec",), "serveConfig"),  # the v1alpha1 field
    ],
)
def test_a_field_kubernetes_would_prune_is_reported(service, rayservice_validator, path, field):
    broken = copy.deepcopy(service)
    node = broken
    for key in path:
        node = node[key]
    node[field] = {}
    assert any(field in problem for problem in violations(rayservice_validator, broken))


def test_prometheus_pod_monitor_selects_every_ray_pod_on_kuberays_metrics_port(service):
    monitor = yaml.safe_load((KUBERAY_DIR.parent / "prometheus" / "podmonitor.yaml").read_text())
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    cluster = service["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for template in templates:
        assert wanted <= template["metadata"]["labels"].items()
    assert [endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
