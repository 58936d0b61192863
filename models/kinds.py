"""The model kinds the service runs: one row per kind, read by every part that needs to know one.

Profiles (which weights), the model deployments (their Serve names), the registry (where a kind's
requests go), the settings (``ENABLED_MODELS``), the routes and ``/health``/``/models`` all derive
what they need from :class:`ModelKind`. A new kind is a new member here, its pipeline in each
profile, and the route that submits it.

Pure Python on purpose: the web ingress imports this module and must stay free of torch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional


class TaskType(str, enum.Enum):
    """What a task is, as records, history and statistics name it; each is run by one kind below."""

    text_to_image = "text_to_image"
    image_edit = "image_edit"
    batch_edit = "batch_edit"  # several edit prompts applied to one image
    image_to_image = "image_to_image"  # one image redrawn, inpainted or outpainted (models.derived)


@dataclass(frozen=True)
class KindSpec:
    """Everything fixed about one model kind."""

    deployment: str  # the Serve deployment that runs it
    qwen_model_id: str  # production weights (the ``qwen`` profile's default source)
    pipeline_class: str  # diffusers pipeline class, for the profiles that run one
    path_setting: str  # setting that points the ``qwen`` profile at other weights
    task_types: tuple[TaskType, ...]  # the task types (records, history) this kind runs
    takes_images: bool  # requests carry input images (edit) rather than an output size
    default_steps: int  # the contract's default ``num_inference_steps`` on this kind's route
    default_guidance_scale: Optional[float]  # the edit pipelines' ``guidance_scale``; None: not used
    not_loaded: str  # the contract's 503 detail while no replica of it runs
    not_loaded_en: str  # the same for ``Accept-Language: en``
    capabilities: tuple[str, ...]  # what ``GET /models`` lists (the contract's words, kept as they are)
    extra_capabilities: tuple[str, ...]  # what it does beyond them (``GET /models`` ``extra_capabilities``)
    description: str  # production model's description in ``GET /models``
    api_model: str  # the model's id in the OpenAI-compatible ``/v1`` API (``GET /v1/models``)
    # The published 4-step Qwen-Image-Lightning LoRA (ModelTC, under lightx2v on the hub) that the
    # ``qwen`` profile's fast mode uses: (hub id, file). LIGHTNING_<KIND> settings override it.
    lightning: tuple[str, str] = ("", "")
    default_true_cfg_scale: float = 4.0  # the contract's default ``true_cfg_scale``


class ModelKind(str, enum.Enum):
    """A model kind; its value is the name used in settings, records and ``/health``."""

    text_to_image = "text_to_image"
    image_edit = "image_edit"

    @property
    def spec(self) -> KindSpec:
        return _SPECS[self]

    @property
    def deployment(self) -> str:
        return self.spec.deployment


_SPECS: dict[ModelKind, KindSpec] = {
    ModelKind.text_to_image: KindSpec(
        deployment="TextToImage",
        qwen_model_id="Qwen/Qwen-Image-2512",
        pipeline_class="QwenImagePipeline",
        path_setting="TEXT_TO_IMAGE_MODEL_PATH",
        task_types=(TaskType.text_to_image, TaskType.image_to_image),
        takes_images=False,
        default_steps=50,
        default_guidance_scale=None,
        not_loaded="文生图模型未加载",
        not_loaded_en="The text-to-image model is not loaded",
        capabilities=("text-to-image", "image generation"),
        extra_capabilities=("image-to-image redraw", "inpainting", "outpainting"),
        description="Qwen-Image-2512 文生图模型",
        lightning=("lightx2v/Qwen-Image-2512-Lightning", "Qwen-Image-2512-Lightning-4steps-V1.0-bf16.safetensors"),
        api_model="qwen-image",
    ),
    ModelKind.image_edit: KindSpec(
        deployment="ImageEdit",
        qwen_model_id="Qwen/Qwen-Image-Edit-2511",
        pipeline_class="QwenImageEditPlusPipeline",
        path_setting="IMAGE_EDIT_MODEL_PATH",
        task_types=(TaskType.image_edit, TaskType.batch_edit),
        takes_images=True,
        default_steps=40,
        default_guidance_scale=1.0,
        not_loaded="图像编辑模型未加载",
        not_loaded_en="The image-edit model is not loaded",
        capabilities=("image-to-image", "image editing", "multi-image composition"),
        extra_capabilities=("masked editing",),
        description="Qwen-Image-Edit-2511 图像编辑模型",
        lightning=(
            "lightx2v/Qwen-Image-Edit-2511-Lightning",
            "Qwen-Image-Edit-2511-Lightning-4steps-V1.0-bf16.safetensors",
        ),
        api_model="qwen-image-edit",
    ),
}

KIND_NAMES: tuple[str, ...] = tuple(kind.value for kind in ModelKind)


def kind_for_task_type(task_type: str) -> ModelKind:
    """The kind that runs a task of ``task_type`` (a batch edit runs on the edit model)."""
    for kind in ModelKind:
        if task_type in kind.spec.task_types:
            return kind
    raise ValueError(f"no model kind runs tasks of type {task_type!r}")
