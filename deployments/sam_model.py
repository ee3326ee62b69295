"""The one factory that builds SAM 2.1: architecture from sam2's own configs, weights verified, then loaded.

Also the test checkpoint ``random-sharp`` (``sharpen``): sam2's seeded random weights give logits of about +-0.4
everywhere, so no pixel of their masks is transparent or opaque and no mask is local to its click; tests of what a
mask holds need masks with real 0 and 255 pixels that sit where the clicks are.
"""

from __future__ import annotations

import io
import logging

import torch

from . import weights
from .settings import SegmenterConfig

logger = logging.getLogger(__name__)


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but no CUDA GPU is visible; use device 'cpu' or 'auto'")
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_precision(requested: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain FP32."""
    if requested == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[requested]


def build_model(config: SegmenterConfig, device: torch.device, progress: bool = True) -> torch.nn.Module:
    from sam2.build_sam import build_sam2  # importing sam2 registers its Hydra configs

    checkpoint = weights.resolve(config.model, config.checkpoint, config.checkpoint_sha256,
                                 cache_dir=config.cache_dir, progress=progress, seed=config.seed,
                                 allow_unverified=config.allow_unverified_checkpoint)
    architecture = weights.OFFICIAL_CHECKPOINTS[config.model].config
    # The seed fixes the random initialisation, which *is* the weights when checkpoint is 'random'.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_sam2(architecture, ckpt_path=None, device="cpu", mode="eval")
    if checkpoint.is_random:
        logger.warning("=" * 78)
        logger.warning("checkpoint '%s': SAM 2.1 %s with SEEDED RANDOM WEIGHTS (seed %d). The masks are "
                       "MEANINGLESS; this mode exists for tests and load tests only.", config.checkpoint.strip(),
                       config.model, config.seed)
        logger.warning("=" * 78)
        if checkpoint.sharp:
            sharpen(model, config.seed)
        # Round-trip through the same safe loader a real checkpoint takes.
        buffer = io.BytesIO()
        torch.save({"model": model.state_dict()}, buffer)
        state = weights.load_state_dict(buffer.getvalue())
    else:
        state = weights.load_state_dict(checkpoint.path)
    model.load_state_dict(state, strict=True)
    logger.info("SAM 2.1 %s loaded from %s onto %s", config.model,
                "random weights" if checkpoint.is_random else checkpoint.path, device)
    return model.to(device).eval()


# random-sharp's constants (tuned on 400x300 photos: one blob around a lone click, 10-20% of the photo).
_LABEL = 16.0  # size of the keep (+) / exclude (-) label embeddings along their direction
_SELF = 3.0  # layer 0's self-attention sharpness: each prompt token attends to itself
_KERNEL = 8.0  # sharpness of an image token's attention to a click by positional-encoding similarity
_FREQUENCY = 0.6  # the positional encoding's frequencies scaled down: a wider kernel, fewer side lobes
_KEPT_ABOVE = 0.7  # a pixel is kept where its attention to keep clicks (less exclude ones) exceeds this
_LOGIT = 1.77  # read-out gain: the on channel is sqrt(32) after the upscaler's LayerNorm, so logits are about +-10
# (alpha 0 and 255 through deployments/edges.py's soft_alpha, which saturates at +-4)


def sharpen(model: torch.nn.Module, seed: int) -> None:
    """Rewires the seeded random SAM 2.1's mask decoder in place (the test checkpoint ``random-sharp``): an image
    token attends to the prompt tokens by the similarity of sam2's random-Fourier positional encodings (a kernel
    in the distance to each click), keeps what attends mostly to keep clicks and drops the rest, at logits of about
    +-10. The image is ignored (the high-resolution features and the image embedding are zeroed in the decoder),
    so a mask is a blob around the keep clicks less the exclude ones; everything still runs through sam2's own
    modules (and the product's decoder) and reaches the model through the same state-dict loading."""
    decoder, prompts = model.sam_mask_decoder, model.sam_prompt_encoder
    first, last = decoder.transformer.layers[0], decoder.transformer.layers[-1]
    reader = last.cross_attn_image_to_token
    dim, inner = decoder.transformer_dim, reader.internal_dim
    gaussian = prompts.pe_layer.positional_encoding_gaussian_matrix
    frequencies = gaussian.shape[1]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        gaussian.mul_(_FREQUENCY)
        # The reader's inner row pair (2f, 2f + 1) holds frequency f's sin and cos: each head compares its own
        # inner / heads / 2 frequencies.
        select = torch.zeros(inner, dim)
        for f in range(inner // 2):
            select[2 * f, f] = select[2 * f + 1, frequencies + f] = 1.0
        used = select.sum(0) > 0
        label = torch.zeros(dim)
        free = torch.nonzero(~used).flatten()
        label[free[0]], label[free[1]] = 2 ** -0.5, -(2 ** -0.5)  # zero mean: LayerNorm keeps it
        # Every token but a click's position is blank on the compared coordinates and blank along the label.
        for embedding in (decoder.obj_score_token.weight, decoder.iou_token.weight, decoder.mask_tokens.weight,
                          prompts.not_a_point_embed.weight, *(e.weight for e in prompts.point_embeddings)):
            embedding[:, used] = 0.0
            embedding.sub_((embedding @ label)[:, None] * label)
        prompts.point_embeddings[1].weight.add_(_LABEL * label)  # keep
        prompts.point_embeddings[0].weight.sub_(_LABEL * label)  # exclude
        # Layer 0 passes the prompt tokens through (self-attention on itself) and zeroes the image tokens; the
        # other token updates add nothing.
        rotation = torch.linalg.qr(torch.randn(dim, dim, generator=generator))[0]
        attention = first.self_attn
        for linear, weight in ((attention.q_proj, _SELF * rotation), (attention.k_proj, _SELF * rotation),
                               (attention.v_proj, torch.eye(dim)), (attention.out_proj, torch.eye(dim))):
            linear.weight.copy_(weight)
            linear.bias.zero_()
        for linear in (first.cross_attn_token_to_image.out_proj, first.mlp.layers[-1], last.self_attn.out_proj,
                       last.cross_attn_token_to_image.out_proj, last.mlp.layers[-1]):
            linear.weight.zero_()
            linear.bias.zero_()
        first.norm4.weight.zero_()
        first.norm4.bias.zero_()
        for norm in (first.norm1, first.norm2, first.norm3, last.norm1, last.norm2, last.norm3, last.norm4):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
        # The reader: image tokens (now their positional encoding alone) against the prompt tokens' encodings;
        # the value is the token's label, less the threshold (a LayerNorm'd label is about _LABEL / 1.22).
        reader.q_proj.weight.copy_(_KERNEL * select)
        reader.k_proj.weight.copy_(select)
        reader.v_proj.weight.copy_(label.expand(inner, dim))
        reader.v_proj.bias.fill_(-_KEPT_ABOVE * _LABEL / 1.22)
        for linear in (reader.q_proj, reader.k_proj):
            linear.bias.zero_()
        alternate = torch.tensor([(-1.0) ** i for i in range(dim)])  # kept: +alternate, dropped: -alternate
        reader.out_proj.weight.copy_(alternate[:, None].expand(dim, inner) / inner)
        reader.out_proj.bias.zero_()
        # Upscaling: channel 0 on where kept, channel 1 where dropped; no high-resolution image features.
        for conv in (decoder.conv_s0, decoder.conv_s1):
            conv.weight.zero_()
            conv.bias.zero_()
        up1, norm, _, up2, _ = decoder.output_upscaling
        for conv in (up1, up2):
            conv.weight.zero_()
            conv.bias.zero_()
        up1.weight[:, 0], up1.weight[:, 1] = alternate[:, None, None], -alternate[:, None, None]
        norm.weight.fill_(1.0)
        norm.bias.zero_()
        up2.weight[0, 0] = up2.weight[1, 1] = 1.0
        up2.weight[1, 0] = up2.weight[0, 1] = -1.0
        # Every mask token reads channel 0 minus channel 1.
        for mlp in decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.zero_()
            mlp.layers[-1].bias.zero_()
            mlp.layers[-1].bias[0], mlp.layers[-1].bias[1] = _LOGIT, -_LOGIT
