"""Every setting of the service in one place, read from the environment (and app-builder args)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.kinds import KIND_NAMES, ModelKind

log = logging.getLogger("qwen_image")

# The deployment of the shared layout: every enabled model in each replica.
SHARED_DEPLOYMENT = "Models"

# Fields that must never travel through Serve's deployment config (which is stored and shown).
SECRET_FIELDS = {"jwt_secret", "admin_password", "database_url"}
# Secret when it carries credentials (``s3://key:secret@bucket``, an Azure SAS ``?sig=…``).
SECRET_WITH_CREDENTIALS = {"result_store_url"}


def carries_credentials(url: Optional[str]) -> bool:
    """Whether a URL holds a user name, a password or a query string (where tokens travel)."""
    if not url:
        return False
    from urllib.parse import urlsplit

    parts = urlsplit(str(url))
    return bool(parts.username or parts.password or parts.query)


class Settings(BaseSettings):
    """Read from environment variables of the same name in upper case (e.g. ``DATA_DIR``)."""

    model_config = SettingsConfigDict(extra="ignore", validate_default=True)

    # --- the process ``python -m serving`` starts (``make run``)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    num_gpus: float = Field(default=0, ge=0)  # GPUs Ray may use; 0: the tiny profile on CPU

    # --- storage
    data_dir: Path = Path("data")
    database_url: Optional[SecretStr] = None  # default: SQLite file under data_dir
    result_store_url: Optional[str] = None  # default: <data_dir>/store; with credentials: env only

    # --- auth
    auth_enabled: bool = True
    allow_registration: bool = True
    jwt_secret: Optional[SecretStr] = None  # default: generated once into <data_dir>/jwt_secret
    token_ttl_seconds: int = Field(default=86400, ge=60)
    admin_username: str = "admin"
    admin_password: Optional[SecretStr] = None  # default: admin123, with a warning in the log
    password_hash_profile: Literal["rfc_9106_low_memory", "cheapest"] = "rfc_9106_low_memory"
    # Failed log-ins before each further one doubles the wait: per (account, address) and per address.
    login_max_failures: int = Field(default=10, ge=0)  # 0 turns throttling off
    login_max_failures_per_address: int = Field(default=100, ge=0)
    login_window_seconds: float = Field(default=300.0, gt=0)  # a counter is forgotten this long after its last failure
    login_max_delay_seconds: Optional[float] = Field(default=None, gt=0)  # default: the window
    # Per client address (the connection's, or X-Forwarded-For from TRUSTED_PROXIES) in a fixed
    # window, whatever the outcome; 0 turns a limit off.
    register_max_per_address: int = Field(default=10, ge=0)
    register_window_seconds: float = Field(default=3600.0, gt=0)
    login_max_per_address: int = Field(default=60, ge=0)
    login_rate_window_seconds: float = Field(default=60.0, gt=0)

    # --- models
    model_profile: str = "tiny"  # "qwen" in production, "tiny" embedded, "sleep" for benchmarks, "faulty" for tests
    enabled_models: Annotated[list[str], NoDecode] = list(KIND_NAMES)  # "a,b" or a JSON list
    text_to_image_model_path: Optional[str] = None
    image_edit_model_path: Optional[str] = None
    # MODEL_PROFILE=qwen21 (Qwen-Image 2.1, Qwen Research License: non-commercial): its weights and
    # its Turbo checkpoint (the fast mode; empty: none), each a hub id or a folder
    qwen21_model_path: Optional[str] = None
    qwen21_turbo_path: Optional[str] = None
    model_cache_dir: Optional[Path] = None
    cpu_offload: bool = False  # the same as OFFLOAD=model (kept for existing configurations)
    # separate: one deployment per model, one GPU per replica. shared: one deployment whose
    # replicas hold every enabled model over one text encoder and VAE (a one-GPU workstation).
    model_layout: Literal["separate", "shared"] = "separate"
    quantization: Literal["none", "fp8"] = "none"  # fp8: FP8 weight-only transformers (torchao)
    offload: Literal["none", "model", "group"] = "none"  # model CPU offload, or group offloading
    # torch threads of a CPU model replica; default: every core (Ray would give it one)
    torch_num_threads: Optional[int] = Field(default=None, ge=1)
    sleep_seconds_per_step: float = 0.01

    # --- LoRA adapters, fast mode, step caching, compilation (models.adapters)
    lora_dir: Optional[Path] = None  # default: <data_dir>/loras; local: sources and uploads live here
    lora_max_upload_mb: int = Field(default=2048, ge=1)
    adapter_cache_size: int = Field(default=4, ge=1)  # adapters kept loaded per replica (LRU)
    adapter_cache_mb: int = Field(default=0, ge=0)  # and at most this many MB of them (0: no byte bound)
    # The fast mode's Lightning LoRA per model, "<hub id or folder>:<file>"; empty: the published ones
    lightning_text_to_image: Optional[str] = Field(default=None, pattern=r"^.+:[^:/]+\.safetensors$")
    lightning_image_edit: Optional[str] = Field(default=None, pattern=r"^.+:[^:/]+\.safetensors$")
    fast_steps: int = Field(default=4, ge=1, le=16)
    step_cache: Optional[Literal["first_block", "taylorseer"]] = None
    step_cache_threshold: Optional[float] = Field(default=None, gt=0, lt=1)
    compile_transformer: bool = False  # regional torch.compile at load, with a warm-up
    # With compilation: the highest LoRA rank that hotswaps into the prepared slots (memory: every slot is this rank)
    max_adapter_rank: int = Field(default=128, ge=1, le=1024)

    # --- tasks
    max_queue_size: int = Field(default=1000, ge=1)
    # The custom resource of the nodes the task registry may run on (serving.placement); '' or a cluster
    # where no node advertises it: beside the ingress that creates it.
    registry_resource: str = "control_plane"
    # Tasks one user may have waiting at once (beyond: 429), so a few accounts cannot fill the queue; 0: no cap.
    max_pending_per_user: int = Field(default=20, ge=0)
    task_retries: int = Field(default=1, ge=0)
    max_upload_mb: int = Field(default=20, ge=1)
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    # An input's size once decoded (RGB), checked from its header before decoding.
    max_decoded_mb: int = Field(default=64, ge=1)
    sync_timeout_seconds: float = Field(default=600.0, gt=0)
    # Requests that wait long (sync submissions, result?wait=true, event streams), per ingress replica:
    # per user (beyond: 429) and in all (beyond: 503), below the ingress's 256 request slots.
    max_waits_per_user: int = Field(default=4, ge=1)
    max_waits: int = Field(default=192, ge=1)
    # How long a /v1 ``response_format=url`` image URL can be fetched without credentials.
    image_url_ttl_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    # Such images converted to JPEG/WebP kept per ingress replica (MB; 0: converted on every fetch),
    # and fetches per client address per window (beyond: 429; 0: no limit).
    image_file_cache_mb: int = Field(default=64, ge=0)
    image_fetch_max_per_address: int = Field(default=120, ge=0)
    image_fetch_window_seconds: float = Field(default=60.0, gt=0)
    # Model names /v1/images/* takes as the route's own model (comma-separated; empty: none), so that
    # scripts written for OpenAI run unchanged; /v1/models lists them (docs/openai.md).
    openai_model_aliases: Annotated[list[str], NoDecode] = [
        "gpt-image-1",
        "gpt-image-1-mini",
        "gpt-image-1.5",
        "dall-e-3",
        "dall-e-2",
    ]

    # --- quotas
    default_daily_limit: int = Field(default=100, ge=0)
    default_monthly_limit: int = Field(default=3000, ge=0)
    quota_timezone: str = "UTC"

    # --- clean-up
    cleanup_interval_seconds: float = Field(default=3600.0, ge=0)  # 0 turns the periodic run off
    cleanup_max_age_hours: float = Field(default=24.0, ge=0)
    cleanup_max_age_days: float = Field(default=30.0, ge=0)
    # Finished tasks leave the registry's memory after this long, or sooner beyond this many kept, and
    # are then answered from their records: the registry's memory follows what is live, not throughput.
    finished_task_memory_seconds: float = Field(default=300.0, ge=0)
    finished_tasks_in_memory: int = Field(default=10_000, ge=0)

    # --- model replicas (docs/performance.md)
    # Images are made from the decoded bytes, encoded and stored beside the next generation (false:
    # inside the device's turn, as before; kept for the benchmark's before/after).
    replica_overlap: bool = True
    prompt_cache_mb: int = Field(default=64, ge=0)  # text-to-image prompt embeddings kept per replica; 0: none

    # --- live events and previews
    preview_every_steps: int = Field(default=5, ge=0)  # a preview every k denoising steps; 0: none
    preview_max_side: int = Field(default=512, ge=16, le=2048)  # previews are never longer than this
    preview_format: Literal["webp", "jpeg"] = "webp"
    preview_quality: int = Field(default=70, ge=1, le=100)
    event_keepalive_seconds: float = Field(default=15.0, gt=0)  # comment lines on a quiet stream
    max_event_streams_per_user: int = Field(default=8, ge=1)  # open event streams per user (and ingress)
    # All open event streams of an ingress replica (beyond: 503), below its ongoing-request limit so
    # that other requests still get in, and those of one client address (beyond: 429).
    max_event_streams: int = Field(default=1500, ge=1)
    max_event_streams_per_address: int = Field(default=64, ge=1)
    # Task statuses each ingress replica keeps current from the registry's change feed, so that a
    # status read does not cross to the registry (serving.status_cache); 0: every read asks it.
    status_cache_size: int = Field(default=20_000, ge=0)
    # Account rows each ingress replica keeps current the same way, so that a read request's token
    # check does not read the database (auth.account_cache); 0: every request reads its user's row.
    account_cache_size: int = Field(default=10_000, ge=0)

    # --- webhooks
    webhook_allow_private_networks: bool = False  # true: receivers on loopback / private addresses
    # Seconds between attempts (its length + 1 = attempts in all); each spread by ± jitter.
    webhook_retry_schedule: list[float] = [5, 30, 120, 600, 1800, 3600, 7200, 14400]
    webhook_retry_jitter: float = Field(default=0.2, ge=0, le=1)
    webhook_max_retry_after_seconds: float = Field(default=3600.0, ge=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_max_concurrency: int = Field(default=32, ge=1)
    webhook_max_per_user: int = Field(default=4, ge=1)
    webhook_progress_interval_seconds: float = Field(default=2.0, ge=0)  # progress webhooks at most this often
    public_base_url: Optional[str] = None  # makes webhooks' result_url absolute (e.g. https://img.example.com)

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [float(v) for v in value.replace(" ", "").split(",") if v]
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _non_negative_schedule(cls, value: list[float]) -> list[float]:
        if any(v < 0 for v in value):
            raise ValueError("webhook_retry_schedule takes seconds >= 0")
        return value

    @field_validator("openai_model_aliases", mode="before")
    @classmethod
    def _split_aliases(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("enabled_models", mode="before")
    @classmethod
    def _split_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("enabled_models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        unknown = set(value) - set(KIND_NAMES)
        if unknown:
            raise ValueError(f"unknown models {sorted(unknown)}; use {' and/or '.join(KIND_NAMES)}")
        return value

    @model_validator(mode="after")
    def _unified_profile_shares(self) -> Settings:
        # Qwen-Image 2.1 is one model for both kinds: one deployment holds it (the shared layout).
        from models.profiles import UNIFIED_PROFILES

        if self.model_profile in UNIFIED_PROFILES and self.model_layout != "shared":
            log.info("MODEL_PROFILE=%s serves both kinds from one model: using MODEL_LAYOUT=shared", self.model_profile)
            self.model_layout = "shared"
        return self

    def public_dict(self) -> dict[str, Any]:
        """Everything but secrets, for passing through Serve; each process re-reads secrets from env."""
        secret = SECRET_FIELDS | {f for f in SECRET_WITH_CREDENTIALS if carries_credentials(getattr(self, f))}
        return self.model_dump(mode="json", exclude=secret)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        from storage.db import sqlite_url

        return sqlite_url(self.data_dir)

    def model_paths(self) -> dict[str, Optional[str]]:
        """Kind -> the weights its row of the kind table's ``path_setting`` points at (None: the default)."""
        return {kind.value: getattr(self, kind.spec.path_setting.lower()) for kind in ModelKind}

    def lightning_sources(self) -> dict[str, tuple[str, str]]:
        """The Lightning LoRA overrides (``LIGHTNING_<KIND>``), kind -> (hub id or folder, file)."""
        sources = {}
        for kind in ModelKind:
            value = getattr(self, f"lightning_{kind.value}")
            if value:
                path, _, weight_name = value.rpartition(":")
                sources[kind.value] = (path, weight_name)
        return sources

    def deployment_for(self, kind: Any) -> str:
        """The Serve deployment that runs ``kind`` (a ``ModelKind``) in this layout."""
        return SHARED_DEPLOYMENT if self.model_layout == "shared" else kind.deployment

    @property
    def offload_mode(self) -> str:
        return "model" if self.cpu_offload and self.offload == "none" else self.offload

    @property
    def resolved_lora_dir(self) -> Path:
        return (self.lora_dir or self.data_dir / "loras").resolve()

    @property
    def lora_max_upload_bytes(self) -> int:
        return self.lora_max_upload_mb * 1024 * 1024

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024


def load_settings(overrides: Optional[dict[str, Any]] = None) -> Settings:
    """Environment first, then explicit overrides (app-builder args) on top."""
    settings = Settings(**(overrides or {}))
    settings.data_dir = settings.data_dir.resolve()
    return settings
