"""The application builder: the single ``import_path`` for ``serve run`` and ``serve_config.yaml``.

    serve run serving.app:build_app model_profile=tiny          # CPU, tiny pipelines
    serve run serve_config.yaml                                  # production: Qwen-Image on GPUs

Builder arguments are the settings of :mod:`serving.settings` (lower case) plus the deployment
options below. Secrets (JWT_SECRET, ADMIN_PASSWORD, DATABASE_URL, and RESULT_STORE_URL when it carries
credentials) are never builder arguments: every process reads them from its own environment.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from serving.deployments import DEPLOYMENTS, SHARED
from serving.ingress import Ingress
from serving.logs import SERVE_LOGGING
from serving.replica_router import ROUTER_PATH
from serving.settings import SECRET_FIELDS, SECRET_WITH_CREDENTIALS, carries_credentials, load_settings


class DeploymentArgs(BaseModel):
    """How the deployments are placed; defaults follow the model profile."""

    model_num_gpus: Optional[float] = Field(default=None, ge=0, description="per model replica; qwen: 1, else 0")
    model_num_cpus: Optional[float] = Field(default=None, ge=0, description="per model replica; qwen: 4, else 0.25")
    ingress_num_cpus: float = Field(default=0.25, ge=0)
    model_replicas: Optional[int] = Field(default=None, ge=1, description="fixed replica count (no autoscaling)")
    model_min_replicas: int = Field(default=1, ge=0)
    model_max_replicas: int = Field(default=8, ge=1, description="autoscaling cap: at most one replica per GPU")
    target_ongoing_requests: float = Field(default=1.0, gt=0)
    upscale_delay_s: float = Field(default=10.0, ge=0)
    downscale_delay_s: float = Field(default=600.0, ge=0)
    look_back_period_s: float = Field(default=30.0, gt=0, description="window the autoscaler averages the queue over")
    # Requests a model replica holds: one generating, one whose result is being stored, one waiting
    # with its inputs read (serving.deployments); 2 was the earlier shape (no waiting one while storing).
    model_max_ongoing_requests: int = Field(default=3, ge=1, le=8)
    ingress_replicas: int = Field(default=1, ge=1)
    ingress_max_queued_requests: int = Field(
        default=1024, ge=1, description="requests waiting in Serve's proxies for an ingress slot; beyond: 503"
    )
    # Each open event stream (GET /tasks/…/events) holds one of these for as long as it is open;
    # requests beyond it wait in the proxy. Streams per user are capped by MAX_EVENT_STREAMS_PER_USER.
    ingress_max_ongoing_requests: int = Field(default=2048, ge=1)


def build_app(args: Optional[dict[str, Any]] = None) -> Application:
    """Build the bind graph: Ingress → one model deployment per enabled kind (models.kinds)."""
    args = dict(args or {})
    leaked = (SECRET_FIELDS & set(args)) | {f for f in SECRET_WITH_CREDENTIALS if carries_credentials(args.get(f))}
    if leaked:
        raise ValueError(f"{sorted(leaked)} must come from the environment, not from builder args")
    deployment_args = DeploymentArgs(**{k: args.pop(k) for k in list(args) if k in DeploymentArgs.model_fields})
    settings = load_settings(args)
    public = settings.public_dict()
    production = settings.model_profile == "qwen"
    gpus = deployment_args.model_num_gpus if deployment_args.model_num_gpus is not None else (1 if production else 0)
    cpus = deployment_args.model_num_cpus if deployment_args.model_num_cpus is not None else (4 if production else 0.25)

    def model_options() -> dict[str, Any]:
        options: dict[str, Any] = {
            "ray_actor_options": {"num_gpus": gpus, "num_cpus": cpus},
            "max_ongoing_requests": deployment_args.model_max_ongoing_requests,
            "logging_config": SERVE_LOGGING,
            # The router takes a replica to keep this many adapters until the replica reports its own.
            # Serve annotates RequestRouterConfig's ``**kwargs`` as ``dict[str, Any]`` each (meant: the whole dict).
            "request_router_config": RequestRouterConfig(
                request_router_class=ROUTER_PATH,  # type: ignore[arg-type]
                request_router_kwargs={"adapter_capacity": settings.adapter_cache_size + 1},  # + Lightning
            ),
        }
        if deployment_args.model_replicas is not None:
            options["num_replicas"] = deployment_args.model_replicas
        else:
            options["autoscaling_config"] = {
                "min_replicas": deployment_args.model_min_replicas,
                "initial_replicas": max(deployment_args.model_min_replicas, 1),
                "max_replicas": deployment_args.model_max_replicas,
                "target_ongoing_requests": deployment_args.target_ongoing_requests,
                "upscale_delay_s": deployment_args.upscale_delay_s,
                "downscale_delay_s": deployment_args.downscale_delay_s,
                "look_back_period_s": deployment_args.look_back_period_s,
            }
        return options

    if settings.model_layout == "shared":
        bound = {"models": SHARED.options(**model_options()).bind(public)}
    else:
        bound = {kind: DEPLOYMENTS[kind].options(**model_options()).bind(public) for kind in settings.enabled_models}
    # mypy does not apply class decorators' types: @serve.deployment made Ingress a Deployment.
    return Ingress.options(  # type: ignore[attr-defined]
        num_replicas=deployment_args.ingress_replicas,
        logging_config=SERVE_LOGGING,
        max_queued_requests=deployment_args.ingress_max_queued_requests,
        max_ongoing_requests=deployment_args.ingress_max_ongoing_requests,
        ray_actor_options={"num_cpus": deployment_args.ingress_num_cpus},
    ).bind(public, **bound)
