"""The tiny profile's components: the real Qwen-Image pipeline classes with tiny random weights.

Nothing is downloaded. Every component (tokenizer and edit processor included) is built in code
from a fixed seed, written once with ``save_pretrained`` into a cache directory and then loaded
back with ``from_pretrained`` by ``models.runtime``, exactly like real weights. The sizes are the
smallest the pipelines accept while keeping the real model's 8x spatial VAE compression, so a
1024x1024 image costs the same number of transformer tokens as in production (4096).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from importlib import metadata
from typing import Optional

# ProcessorMixin is imported for diffusers' sake: when loading a component whose class lives
# outside diffusers/transformers (ImageOnlyQwen2VLProcessor below), diffusers looks up the base
# classes it knows how to load as attributes of that class's module.
from transformers import ProcessorMixin, Qwen2VLProcessor  # noqa: F401

from .profiles import IMAGE_EDIT, TEXT_TO_IMAGE, check_kind

log = logging.getLogger(__name__)

# Bump when the way components are built changes in a way the configs below do not show.
TINY_FORMAT = 3  # 2: VAE convolutions re-initialised, prompt keys scaled; 3: VAE a low-pass autoencoder
SEED = 0

# Building seeds torch's process-wide random generator; two threads building at once would
# interleave their draws and get different weights. Only building takes it, never generation.
_BUILD_LOCK = threading.Lock()

# The Qwen2 special tokens the pipelines use, in Qwen2's order; the text encoder config refers
# to their ids.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The prompt templates of QwenImagePipeline and QwenImageEditPlusPipeline (diffusers 0.42), the
# tokenizer's training text. Each pipeline drops the hidden states of the template's system part:
# the first 34 and 64 tokens.
TEXT_TO_IMAGE_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    "<|im_start|>assistant\n"
)
IMAGE_EDIT_TEMPLATE = (
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, texture, objects, "
    "background), then explain how the user's text instruction should alter or modify the image. Generate a new "
    "image that meets the user's requirements while maintaining consistency with the original input where "
    "appropriate.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
_IMAGE_PROMPT = "Picture 1: <|vision_start|><|image_pad|><|vision_end|>"

# Weight shaping after construction (see _shape_vae and _strengthen_text_attention).
# The VAE's colour channels carry colour + _VAE_OFFSET into each RMS norm beside a constant channel
# of _VAE_ANCHOR, which keeps the norm's divisor within ~1% of constant (the norm nearly linear);
# the norm's gain then lifts them to _VAE_SILU_SCALE x (colour + offset) >= 8, where SiLU is the
# identity to 0.3%. Encoding samples with a log-variance of _VAE_LOGVAR (the clamp's floor): a
# standard deviation of 3e-7, so an image's latents are all but deterministic.
_VAE_OFFSET = 1.5
_VAE_ANCHOR = 50.0
_VAE_SILU_SCALE = 16.0
_VAE_LOGVAR = -30.0
_LATENT_STD = 0.5  # latent = block-average colour in [-1, 1]; a picture's spread is about this
_TEXT_KEY_SCALE = 3.0
# The image tokens' attention output is scaled up so that what they read from the prompt moves the
# latents enough to show through the (linear) VAE decoder; see _strengthen_text_attention.
_ATTENTION_OUT_GAIN = 30.0

_HIDDEN = 16  # text hidden size = vision output size = transformer joint attention dim
_Z_DIM = 4

VAE_CONFIG = {
    # 6 channels: the decoder halves them after each upsampling, and RGB must pass (3); the RMS
    # norms before the output convolutions see RGB and a constant channel (4 of 6).
    "base_dim": 6,
    "z_dim": _Z_DIM,
    # Four levels and three downsampling stages give the real VAE's 8x spatial compression.
    # Flat channel counts decode 1024x1024 ~30% faster than the usual [1, 2, 4, 4]: at this size
    # the work is memory-bound, and the mid-block attention over 16,384 positions is cheapest narrow.
    "dim_mult": [1, 1, 1, 1],
    # One residual block per decoder level (none in the encoder): with 6 channels, one more per
    # level would decode 1024x1024 ~50% slower. Valid only with flat channel counts.
    "num_res_blocks": 0,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    # Latent channels 0-2 hold the 8x8 block's mean colour in [-1, 1]; channel 3 is 0.
    "latents_mean": [0.0] * _Z_DIM,
    "latents_std": [_LATENT_STD] * _Z_DIM,
}

TRANSFORMER_CONFIG = {
    "patch_size": 2,
    "in_channels": 4 * _Z_DIM,
    "out_channels": _Z_DIM,
    "num_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 1,
    "joint_attention_dim": _HIDDEN,
    "guidance_embeds": False,
    "axes_dims_rope": [8, 4, 4],  # sums to attention_head_dim
}

# Qwen-Image-Edit-2511's transformer modulates the input-image tokens with timestep 0.
EDIT_TRANSFORMER_EXTRA = {"zero_cond_t": True}

TEXT_CONFIG = {
    "hidden_size": _HIDDEN,
    "intermediate_size": _HIDDEN,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    # sums to half the text head dim (16 / 2 heads / 2)
    "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
    "rope_theta": 1000000.0,
}

VISION_CONFIG = {
    "depth": 1,
    "hidden_size": _HIDDEN,
    "intermediate_size": _HIDDEN,
    "num_heads": 1,
    "out_hidden_size": _HIDDEN,
    "fullatt_block_indexes": [0],
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
}

# Qwen-Image's published scheduler configuration.
SCHEDULER_CONFIG = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without a video processor.

    transformers 5 cannot build, save or load the full processor without torchvision (its video
    processor needs it), and the CPU torch wheel cannot import torchvision. The edit pipeline only
    ever passes images, so the tiny profile uses this subclass; the real weights use the real class.
    The saved model_index.json names it as ``models.tiny``, which diffusers only resolves once
    that module is imported (``models.runtime`` imports it before loading).
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **kwargs)


def tiny_pipeline_dir(cache_dir: str, kind: str) -> str:
    """The directory the tiny ``kind`` pipeline is (or will be) saved in under ``cache_dir``."""
    check_kind(kind)
    return os.path.join(cache_dir, f"tiny-{kind.replace('_', '-')}-{_fingerprint(kind)}")


def ensure_tiny_pipeline(kind: str, cache_dir: str) -> str:
    """Build and save the tiny ``kind`` pipeline unless it is already there; return its directory.

    Safe with several processes at once: each builds into its own temporary directory and
    renames it into place; a process that loses the race drops its copy and uses the winner's.
    Every build is identical (fixed seed), so which one wins does not matter.
    """
    final = tiny_pipeline_dir(cache_dir, kind)
    if os.path.isfile(os.path.join(final, "model_index.json")):
        return final
    os.makedirs(cache_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.", dir=cache_dir)
    try:
        build_tiny_pipeline(kind).save_pretrained(staging)
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the cache may be shared
        try:
            os.rename(staging, final)
            log.info("built tiny %s pipeline in %s", kind, final)
        except OSError:
            if not os.path.isfile(os.path.join(final, "model_index.json")):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def build_tiny_pipeline(kind: str):
    """Build the tiny ``kind`` pipeline in memory (``QwenImagePipeline`` or ``QwenImageEditPlusPipeline``)."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPlusPipeline,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )

    check_kind(kind)
    tokenizer = build_tokenizer()
    # fork_rng: building must not disturb the caller's random state, and must not depend on it.
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        transformer_config = copy.deepcopy(TRANSFORMER_CONFIG)
        if kind == IMAGE_EDIT:
            transformer_config.update(EDIT_TRANSFORMER_EXTRA)
        transformer = QwenImageTransformer2DModel(**transformer_config)
        _strengthen_text_attention(transformer)
        torch.manual_seed(SEED)
        vae = AutoencoderKLQwenImage(**copy.deepcopy(VAE_CONFIG))
        _shape_vae(vae)
        torch.manual_seed(SEED)
        text_encoder = _build_text_encoder(tokenizer)
    scheduler = FlowMatchEulerDiscreteScheduler(**copy.deepcopy(SCHEDULER_CONFIG))
    components = dict(
        transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler
    )
    pipeline: QwenImagePipeline | QwenImageEditPlusPipeline
    if kind == TEXT_TO_IMAGE:
        pipeline = QwenImagePipeline(**components)
    else:
        pipeline = QwenImageEditPlusPipeline(processor=build_processor(tokenizer), **components)
    _check_template_prefix(pipeline)
    return pipeline


def _shape_vae(vae) -> None:
    """Make the VAE a low-pass autoencoder: latents hold each 8x8 block's mean colour.

    A random VAE is nothing like an autoencoder (its encode-decode of an image lands ~50-74 of 255
    away from it), so image-to-image and inpainting could not show what they keep of the input.
    Here every residual and attention branch is switched off (output weights 0: a block passes its
    skip path), the encoder's downsampling convolutions take the 2x2 mean of each channel and the
    decoder's upsampling is nearest-neighbour with the identity on RGB; the input convolutions copy
    RGB into channels 0-2, and the output ones copy them back. The only nonlinear steps on the path
    are each half's final RMS norm and SiLU, kept near the identity by a constant channel and an
    offset (see _VAE_ANCHOR). Decoding stays linear in the latents, so every change the transformer
    makes to them shows in the pixels.
    """
    import torch

    colours = range(3)
    anchor = 3  # the constant channel in front of each final RMS norm
    divisor = (_VAE_ANCHOR**2 + 3 * _VAE_OFFSET**2) ** 0.5  # that norm's divisor for mid-grey

    def centre(conv, pairs, scale=1.0):
        # A causal 3-D convolution sees a single frame only through its last temporal slice.
        taps = (-1,) if conv.weight.dim() == 5 else ()
        middle = tuple(size // 2 for size in conv.weight.shape[-2:])
        for out, inp in pairs:
            index = (out, inp, *taps, *middle)
            conv.weight[index] = scale

    def offsets(bias):
        bias[list(colours)] = _VAE_OFFSET
        bias[anchor] = _VAE_ANCHOR

    def output_norm(norm):
        # RMS norm: x / |x| * sqrt(channels) * gamma; the colour channels come out at 16 x (colour + offset).
        norm.gamma.fill_(1.0)
        norm.gamma[list(colours)] = _VAE_SILU_SCALE * divisor / norm.scale

    with torch.no_grad():
        for module in vae.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
        identity = [(c, c) for c in colours]
        for coder in (vae.encoder, vae.decoder):
            centre(coder.conv_in, identity)
            for block in coder.modules():
                if type(block).__name__ == "QwenImageResidualBlock" and isinstance(
                    block.conv_shortcut, torch.nn.Conv3d
                ):
                    centre(block.conv_shortcut, identity)
            output_norm(coder.norm_out)
        # The encoder: the offsets and the anchor from the first convolution (2x2 means keep
        # constants), block means by downsampling, colour back out as the latent's mean.
        offsets(vae.encoder.conv_in.bias)
        for block in vae.encoder.down_blocks:
            for conv in block.modules():
                if isinstance(conv, torch.nn.Conv2d):  # after a zero pad on the right and bottom
                    for c in [*colours, anchor]:  # taps 0-1 are the 2x2 block
                        conv.weight[c, c, :2, :2] = 0.25
        centre(vae.encoder.conv_out, identity, 1 / _VAE_SILU_SCALE)
        vae.encoder.conv_out.bias[list(colours)] = -_VAE_OFFSET
        vae.encoder.conv_out.bias[_Z_DIM:] = _VAE_LOGVAR
        centre(vae.quant_conv, [(c, c) for c in range(2 * _Z_DIM)])
        centre(vae.post_quant_conv, [(c, c) for c in range(_Z_DIM)])
        # The decoder: upsampling convolutions pass RGB; the last block's shortcut adds the offsets
        # and the anchor; the output convolution takes them off again.
        for up_block in vae.decoder.up_blocks:
            if up_block.upsamplers is not None:
                centre(up_block.upsamplers[0].resample[1], identity)
        offsets(vae.decoder.up_blocks[-1].resnets[-1].conv_shortcut.bias)
        centre(vae.decoder.conv_out, identity, 1 / _VAE_SILU_SCALE)
        vae.decoder.conv_out.bias[list(colours)] = -_VAE_OFFSET


def _strengthen_text_attention(transformer) -> None:
    """Let the image tokens attend to the prompt.

    The prompt reaches the image only through joint attention, where its ~10-30 tokens sit
    beside 256 (256x256) to 4096 (1024x1024) image tokens. With the RMS-normalised keys'
    default scale of 1 every logit is ~N(0, 1), so the prompt took well under 1% of the
    attention and two prompts gave the same pixels. Scaling the prompt keys' norm weight
    spreads their logits over a few units: some image tokens then attend mostly to the prompt.
    Even so, the attention's output (default init, weights ~0.14) moved the final latents by ~1%
    between two prompts: invisible once the VAE decodes linearly. Scaling the image stream's
    output projection lets it dominate the residual stream: ~0.2 of a latent's ~1.1 spread.
    """
    import torch

    with torch.no_grad():
        for block in transformer.transformer_blocks:
            block.attn.norm_added_k.weight.fill_(_TEXT_KEY_SCALE)
            block.attn.to_out[0].weight.mul_(_ATTENTION_OUT_GAIN)


def build_tokenizer(texts: list[str] | None = None):
    """A byte-level BPE ``Qwen2Tokenizer`` trained in code on the pipelines' prompt templates.

    ``texts``: other training text (the 2.1 profile's templates, ``models.tiny21``).

    Any text tokenizes (bytes are the base alphabet); the template words are single tokens, so
    the pipelines' fixed drop counts cut the template off exactly.
    """
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # Train with Qwen2Tokenizer's own pre-tokenizer split: with every training word merged into
    # one token, the template prefixes come to the same token counts as with the real vocabulary.
    trainer_model = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    trainer_model.normalizer = normalizers.NFC()
    trainer_model.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    trainer_model.train_from_iterator(texts or _training_text(), trainer)
    model = json.loads(trainer_model.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    # The tokenizer takes merge pairs as well as "a b" strings; its annotation names only the latter.
    tokenizer = Qwen2Tokenizer(vocab=model["vocab"], merges=merges)  # type: ignore[arg-type]
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    return tokenizer


def build_processor(tokenizer) -> ImageOnlyQwen2VLProcessor:
    """The edit pipeline's processor: Qwen2-VL's image preprocessing (PIL backend) and ``tokenizer``."""
    from transformers import Qwen2VLImageProcessorPil

    return ImageOnlyQwen2VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(
            patch_size=VISION_CONFIG["patch_size"],
            temporal_patch_size=VISION_CONFIG["temporal_patch_size"],
            merge_size=VISION_CONFIG["spatial_merge_size"],
        ),
        tokenizer=tokenizer,
    )


def vl_encoder_config(
    config_class, tokenizer, text_config: dict, vision_config: dict, vocab_size: Optional[int] = None
):
    """A Qwen vision-language model's config for a tiny tokenizer: its special tokens' ids wired in.
    ``vocab_size``: the text model's vocabulary, the tokenizer's size unless given (the full-size
    configs of ``benchmarks/gpu_pipeline.py`` keep the published one).

    Deep copies: transformers rewrites the nested rope settings in place, and the callers' module
    constants also name the cache folder."""
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    return config_class(
        text_config=dict(
            copy.deepcopy(text_config),
            vocab_size=vocab_size or len(tokenizer),
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=copy.deepcopy(vision_config),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def _build_text_encoder(tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = vl_encoder_config(Qwen2_5_VLConfig, tokenizer, TEXT_CONFIG, VISION_CONFIG)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _check_template_prefix(pipeline) -> None:
    # The pipeline drops a fixed number of leading hidden states; if a diffusers release changes
    # its template, fail at build time rather than silently feed template tokens to the model.
    prefix = pipeline.prompt_template_encode.split("{}")[0]
    count = len(pipeline.tokenizer(prefix).input_ids)
    if count != pipeline.prompt_template_encode_start_idx:
        raise RuntimeError(
            f"the tiny tokenizer makes {count} tokens of {type(pipeline).__name__}'s template prefix, "
            f"which drops {pipeline.prompt_template_encode_start_idx}; update the templates in models/tiny.py"
        )


def _training_text() -> list[str]:
    texts = [TEXT_TO_IMAGE_TEMPLATE.format(""), IMAGE_EDIT_TEMPLATE.format(_IMAGE_PROMPT)]
    # Special tokens are added whole; training on them would only waste merges.
    for token in SPECIAL_TOKENS:
        texts = [t.replace(token, "\n") for t in texts]
    return texts


def _fingerprint(kind: str) -> str:
    versions = {}
    for package in ("diffusers", "transformers", "tokenizers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "?"
    spec = {
        "format": TINY_FORMAT,
        "kind": kind,
        "seed": SEED,
        "vae": VAE_CONFIG,
        "transformer": TRANSFORMER_CONFIG,
        "edit_transformer": EDIT_TRANSFORMER_EXTRA,
        "text": TEXT_CONFIG,
        "vision": VISION_CONFIG,
        "scheduler": SCHEDULER_CONFIG,
        "shaping": [_VAE_OFFSET, _VAE_ANCHOR, _VAE_SILU_SCALE, _VAE_LOGVAR, _TEXT_KEY_SCALE, _ATTENTION_OUT_GAIN],
        "versions": versions,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
