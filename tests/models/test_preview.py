"""Live previews: the latent→RGB maps, and previews made during real tiny-pipeline runs."""

from __future__ import annotations

import base64
import io
import threading

import torch
from PIL import Image

from models import GenerationRequest, PreviewOptions, generate
from models.aspect import edit_output_size
from models.preview import WAN21_LATENT_RGB_FACTORS, encode_preview, fit_map, map_for_vae, unpack_latents


def decode(preview: dict) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(preview["b64"])))
    image.load()
    return image


def collect():
    got: list[dict] = []
    lock = threading.Lock()

    def sink(preview: dict) -> None:
        with lock:
            got.append(preview)

    return got, sink


def test_a_16_channel_vae_uses_the_published_map_and_the_tiny_vae_a_fitted_one(text_to_image_model):
    vae = text_to_image_model.pipeline.vae
    fitted = map_for_vae(vae)
    assert fitted.channels == vae.config.z_dim == 4
    assert "fitted" in fitted.source

    class Config:
        z_dim = 16

    class Sixteen:
        config = Config()

    published = map_for_vae(Sixteen())
    assert published.factors == WAN21_LATENT_RGB_FACTORS and published.channels == 16


def test_the_fitted_map_predicts_the_tiny_vae_better_than_its_mean(text_to_image_model):
    # A map fitted on one sample set must explain colours of latents it never saw better than
    # a constant colour would.
    vae = text_to_image_model.pipeline.vae
    rgb_map = fit_map(vae, seed=0)
    held_out = fit_map(vae, seed=1)  # a fit on other latents lands near the same map
    a, b = torch.tensor(rgb_map.factors), torch.tensor(held_out.factors)
    assert torch.allclose(a, b, atol=0.05 + 0.5 * a.abs().max().item())


def test_unpack_matches_the_pipeline_packing():
    from diffusers import QwenImagePipeline

    latents = torch.arange(4 * 6 * 8, dtype=torch.float32).view(1, 4, 6, 8)  # (B, C, h, w) latent pixels
    packed = QwenImagePipeline._pack_latents(latents, 1, 4, 6, 8)
    assert torch.equal(unpack_latents(packed, width=8 * 8, height=6 * 8), latents)


def test_encode_preview_is_small_and_keeps_the_aspect_ratio():
    rgb = torch.randint(0, 255, (116, 208, 3), dtype=torch.uint8).numpy()
    preview = encode_preview(rgb, max_side=128, image_format="jpeg")
    image = decode(preview)
    assert image.format == "JPEG" and preview["media_type"] == "image/jpeg"
    assert max(image.size) == 128 and abs(image.width / image.height - 208 / 116) < 0.03
    webp = encode_preview(rgb, max_side=512, image_format="webp")
    assert decode(webp).format == "WEBP" and (webp["width"], webp["height"]) == (208, 116)


def test_text_to_image_sends_previews_every_k_steps_with_the_image_aspect_ratio(text_to_image_model):
    got, sink = collect()
    # 16:9-ish at a small size keeps the test quick; the latent grid is 52x28.
    request = GenerationRequest(prompt="a cat", width=416, height=224, num_inference_steps=20, seed=3)
    result = generate(text_to_image_model, request, previews=PreviewOptions(every=3, sink=sink))
    assert not result.interrupted and result.images[0].size == (416, 224)
    steps = [p["step"] for p in got]
    assert steps and all(s % 3 == 0 and s < 20 for s in steps) and steps == sorted(steps)
    for preview in got:
        image = decode(preview)
        assert image.format == "WEBP" and image.size == (preview["width"], preview["height"]) == (52, 28)
        assert preview["total"] == 20


def test_edit_previews_follow_the_output_size(image_edit_model):
    got, sink = collect()
    source = Image.new("RGB", (1024, 768), (10, 200, 30))
    request = GenerationRequest(prompt="make it blue", images=[source], num_inference_steps=20, seed=1)
    generate(image_edit_model, request, previews=PreviewOptions(every=5, sink=sink, image_format="jpeg"))
    width, height = edit_output_size(1024, 768)
    assert got
    for preview in got:
        image = decode(preview)
        assert image.format == "JPEG"
        assert abs(image.width / image.height - width / height) < 0.02
        assert image.size == (width // 8, height // 8)


def test_the_cpu_projection_matches_the_device_one():
    from models.preview import LatentRGBMap, project_packed

    rgb_map = LatentRGBMap(
        [[0.3, -0.2, 0.1], [0.0, 0.5, -0.4], [0.2, 0.2, 0.2], [-0.1, 0.0, 0.6]], [0.1, -0.1, 0.0], "test"
    )
    packed = torch.randn(1, 6 * 4, 16)  # a 64x96 image: a 4x6 token grid, 4 channels
    image = unpack_latents(packed, width=96, height=64)[0]
    expected = torch.einsum("chw,cr->hwr", image, torch.tensor(rgb_map.factors)) + torch.tensor(rgb_map.bias)
    expected = ((expected + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    got = project_packed(packed.numpy(), rgb_map, 96, 64)
    assert got.shape == (8, 12, 3) and abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_partial_images_are_vae_decodes_at_the_requested_size_beside_the_latent_previews(text_to_image_model):
    got, sink = collect()
    request = GenerationRequest(prompt="a cat", width=416, height=224, num_inference_steps=20, seed=3, partial_images=3)
    result = generate(text_to_image_model, request, previews=PreviewOptions(every=0, sink=sink))
    assert not result.interrupted and result.images[0].size == (416, 224)
    assert [p["step"] for p in got] == [5, 10, 15]  # spread over the run; no latent preview with every=0
    for partial in got:
        image = decode(partial)
        assert partial["decoded"] is True and image.format == "JPEG"
        assert image.size == (partial["width"], partial["height"]) == (416, 224)


def test_a_partial_decode_is_what_the_pipeline_decodes_from_the_same_latents(text_to_image_model):
    from models.preview import decode_packed

    pipeline = text_to_image_model.pipeline
    latents = torch.randn(1, (224 // 16) * (416 // 16), 4 * int(pipeline.vae.config.z_dim))
    ours = decode_packed(pipeline.vae, latents, 416, 224)
    unpacked = pipeline._unpack_latents(latents, 224, 416, pipeline.vae_scale_factor)
    config = pipeline.vae.config
    mean = torch.tensor(config.latents_mean).view(1, config.z_dim, 1, 1, 1)
    std = 1.0 / torch.tensor(config.latents_std).view(1, config.z_dim, 1, 1, 1)
    with torch.no_grad():
        image = pipeline.vae.decode(unpacked / std + mean, return_dict=False)[0][:, :, 0]
    theirs = pipeline.image_processor.postprocess(image, output_type="np")[0]
    assert ours.shape == (224, 416, 3)
    assert abs(ours.astype(int) - (theirs * 255).round().astype(int)).max() <= 1
