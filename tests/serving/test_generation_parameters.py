"""GenerationParameters: the one object a task's parameters travel in, from a route to the pipeline."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlmodel import Session, select

from models.kinds import ModelKind, TaskType
from serving.protocol import AdapterChoice, GenerationParameters
from storage import TaskRecord, make_engine
from storage.db import init_db, sqlite_url

pytestmark = pytest.mark.unit

T2I, EDIT = ModelKind.text_to_image, ModelKind.image_edit

# The parameters as the routes built them as dicts before this model, for each route: records
# written then must load, and history must show them unchanged.
STORED = {
    "native text-to-image": (
        TaskType.text_to_image,
        "a cat",
        {
            "negative_prompt": "",
            "aspect_ratio": "16:9",
            "width": 1664,
            "height": 928,
            "num_inference_steps": 50,
            "true_cfg_scale": 4.0,
            "seed": 123,
            "num_images": 2,
            "loras": [{"name": "ink", "scale": 0.8}],
        },
    ),
    "native edit, fast": (
        TaskType.image_edit,
        "make it blue",
        {
            "negative_prompt": "blurry",
            "num_inference_steps": 4,
            "true_cfg_scale": 1.0,
            "guidance_scale": 1.0,
            "seed": 7,
            "num_images": 1,
            "input_count": 2,
            "input_sizes": [[640, 480], [32, 24]],
            "speed": "fast",
        },
    ),
    "native batch edit": (
        TaskType.batch_edit,
        "snow | rain",
        {
            "negative_prompt": "",
            "num_inference_steps": 40,
            "true_cfg_scale": 4.0,
            "guidance_scale": 1.0,
            "seed": 9,
            "num_images": 1,
            "prompts": ["snow", "rain"],
            "input_count": 1,
            "input_sizes": [[64, 64]],
        },
    ),
    "/v1 edit": (
        TaskType.image_edit,
        "a hat",
        {
            "negative_prompt": "",
            "num_inference_steps": 30,
            "true_cfg_scale": 4.0,
            "seed": 11,
            "num_images": 1,
            "api": "openai",
            "model": "qwen-image-edit",
            "size": "1024x1536",
            "quality": "medium",
            "output_format": "webp",
            "response_format": "url",
            "end_user": "user-42",
            "guidance_scale": 1.0,
            "input_count": 1,
            "input_sizes": [[256, 256]],
            "output_size": [1024, 1536],
        },
    ),
}


def test_left_out_steps_and_scales_come_from_the_kind_table():
    t2i = GenerationParameters(kind=T2I, prompt="a cat")
    edit = GenerationParameters(kind=EDIT, prompt="make it blue")
    assert (t2i.num_inference_steps, t2i.true_cfg_scale, t2i.guidance_scale) == (
        T2I.spec.default_steps,
        T2I.spec.default_true_cfg_scale,
        None,  # text-to-image has no guidance scale: none is stored
    )
    assert (edit.num_inference_steps, edit.guidance_scale) == (
        EDIT.spec.default_steps,
        EDIT.spec.default_guidance_scale,
    )
    assert (t2i.num_inference_steps, edit.num_inference_steps) == (50, 40)  # the contract's defaults
    given = GenerationParameters(kind=EDIT, prompt="p", num_inference_steps=25, guidance_scale=2.5)
    assert (given.num_inference_steps, given.guidance_scale) == (25, 2.5)


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"prompt": "cat\x00dog"}, "prompt"),
        ({"prompt": "cat", "negative_prompt": "no\x00pe"}, "negative_prompt"),
        ({"prompts": ["fine", "bad\x00"]}, "prompts"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"prompt": "cat", "num_inference_steps": 0}, "num_inference_steps"),
        ({"prompt": "cat", "true_cfg_scale": 11.0}, "true_cfg_scale"),
        ({"prompt": "cat", "seed": 2**32}, "seed"),
        ({"prompt": "cat", "num_images": 5}, "num_images"),
        ({"prompt": "cat", "loras": [{"name": "ink", "scale": 3.0}]}, "loras"),
        ({"prompts": [f"p{n}" for n in range(11)]}, "prompts"),
    ],
)
def test_bad_values_are_refused_naming_the_field(fields, field):
    with pytest.raises(ValidationError) as refused:
        GenerationParameters(kind=EDIT, **fields)
    assert refused.value.errors()[0]["loc"][0] == field


def test_a_task_has_either_one_prompt_or_a_batchs_prompts():
    with pytest.raises(ValidationError, match="either prompt or prompts"):
        GenerationParameters(kind=EDIT)
    with pytest.raises(ValidationError, match="either prompt or prompts"):
        GenerationParameters(kind=EDIT, prompt="a", prompts=["b"])
    batch = GenerationParameters(kind=EDIT, prompts=[" snow ", "rain"], num_inference_steps=20)
    assert (batch.prompt_list, batch.task_prompt, batch.total_steps) == (["snow", "rain"], "snow | rain", 40)
    single = GenerationParameters(kind=T2I, prompt="  a cat ", num_inference_steps=20)
    assert (single.prompt_list, single.task_prompt, single.total_steps) == (["a cat"], "a cat", 20)


@pytest.mark.parametrize("case", list(STORED))
def test_records_written_as_dicts_load_and_store_the_same_parameters(tmp_path, case):
    """A record in a real database, as the earlier code wrote it: read back through the model and
    stored again, it gives the same JSON (so history shows what it showed)."""
    task_type, prompt, stored = STORED[case]
    engine = make_engine(sqlite_url(tmp_path))
    init_db(engine)
    with Session(engine) as session:
        session.add(TaskRecord(task_id="t", user_id=None, task_type=task_type.value, prompt=prompt, parameters=stored))
        session.commit()
    with Session(engine) as session:
        record = session.exec(select(TaskRecord)).one()
        loaded = GenerationParameters.from_record(record)
    assert loaded.to_record() == stored
    assert loaded.kind == (T2I if task_type == TaskType.text_to_image else EDIT)
    assert loaded.prompt_list == (stored.get("prompts") or [prompt])


def test_a_record_missing_parameters_takes_the_kind_tables_defaults():
    record = TaskRecord(task_id="t", user_id=None, task_type="image_edit", prompt="p", parameters={})
    loaded = GenerationParameters.from_record(record)
    assert (loaded.num_inference_steps, loaded.true_cfg_scale, loaded.seed) == (40, 4.0, -1)


def test_the_pipeline_request_carries_every_parameter():
    parameters = GenerationParameters(
        kind=EDIT,
        prompts=["snow", "rain"],
        negative_prompt="blurry",
        num_inference_steps=4,
        true_cfg_scale=1.0,
        guidance_scale=2.0,
        seed=5,
        num_images=3,
        output_size=(512, 768),
        loras=[AdapterChoice(name="ink", scale=0.5)],
        speed="fast",
    )
    request = parameters.pipeline_request("rain", images=["image"], adapters=["adapter"])
    assert (request.prompt, request.negative_prompt, request.num_inference_steps) == ("rain", "blurry", 4)
    assert (request.true_cfg_scale, request.guidance_scale, request.seed, request.num_images) == (1.0, 2.0, 5, 3)
    assert (request.edit_size, request.fast, request.images, request.adapters) == (
        (512, 768),
        True,
        ["image"],
        ["adapter"],
    )
    t2i = GenerationParameters(kind=T2I, prompt="p", width=1664, height=928).pipeline_request("p", [], [])
    assert (t2i.width, t2i.height, t2i.guidance_scale, t2i.fast, t2i.edit_size) == (1664, 928, 1.0, False, None)
