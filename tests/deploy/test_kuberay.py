"""deploy/kuberay: manifests that parse, the same application as serve_config.yaml, secrets by reference."""

from __future__ import annotations

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from tests.deploy.config import (
    KUBERAY_DIR, MODEL_DEPLOYMENTS, SECRET_NAME, SECRETS, deployments, kuberay_documents, serve_config, the,
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
    assert {path.name for path, _ in documents} >= {"rayservice.yaml", "secrets.example.yaml", "pvc.yaml"}
    assert len(documents) == len(list(KUBERAY_DIR.glob("*.yaml")))
    for path, doc in documents:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name"), path.name


def test_the_rayservice_is_ray_io_v1(service):
    assert service["apiVersion"] == "ray.io/v1"


def test_embedded_serve_config_is_valid(embedded):
    ServeDeploySchema.model_validate(embedded)


def test_embedded_application_is_the_one_in_serve_config_yaml(embedded):
    [mine], [theirs] = embedded["applications"], serve_config()["applications"]
    for field in ("name", "route_prefix", "import_path", "args"):
        assert mine[field] == theirs[field], field
    assert deployments(mine) == deployments(theirs)
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
    assert set(secret["stringData"]) == set(SECRETS)


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
    longest = max(deployments(embedded["applications"][0])[name]["graceful_shutdown_timeout_s"]
                  for name in MODEL_DEPLOYMENTS)
    assert group["template"]["spec"]["terminationGracePeriodSeconds"] > longest


def test_gpu_workers_are_ready_when_the_service_answers_health(service):
    [group] = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    probe = ray_container(group["template"]["spec"])["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/health", 8000)
