"""SAM 2.1's mask decoder with its image-only work done once per image instead of once per click.

On every click sam2's ``MaskDecoder`` copies the positional encoding, adds the (constant) no-mask embedding to
the image embedding, and in the first two-way attention layer adds the positional encoding to the 4,096 image
tokens and projects them to keys, values and queries. None of that depends on the clicks: here it is
``prepare``d once per image and ``decode`` runs the rest, calling the same modules with the same operations in
the same order, so the logits are bit-identical to ``MaskDecoder``'s (tests/test_segmenter.py checks). The
upscaling's transposed convolutions run as matrix products (``_upscale``): the same sums, faster on the CPU.
Image tokens are kept contiguous token-major, and results are written in place where nothing else holds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True, eq=False)
class PreparedImage:
    """The prompt-independent part of one image's decoder pass (FP32, on the model's device). Image tokens are
    kept token-major and contiguous: adding sam2's channel-major views token by token is a strided pass that
    cost a decode ~2 ms per addition on the CPU."""

    keys: torch.Tensor  # image embedding + no-mask embedding as tokens, (1, h*w, C)
    size: tuple[int, int]  # (h, w) of the embedding grid
    key_pe: torch.Tensor  # the positional encoding as tokens, (1, h*w, C); the same for every image
    first_layer: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # token->image k, v; image->token q projections
    high_res: tuple[torch.Tensor, ...]  # FP32 high-resolution features for the upscaler


def as_tokens(image_pe: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w) -> (1, h*w, C), contiguous."""
    return image_pe.flatten(2).permute(0, 2, 1).contiguous()


def prepare(model, image_embed: torch.Tensor, high_res: tuple[torch.Tensor, ...], key_pe: torch.Tensor,
            no_mask_dense: torch.Tensor) -> PreparedImage:
    """The image-only terms of ``MaskDecoder.predict_masks`` (repeat_image=False) for a prompt without a mask;
    ``key_pe`` is ``as_tokens(image_pe)``."""
    decoder = model.sam_mask_decoder
    first = decoder.transformer.layers[0]
    src = image_embed + no_mask_dense
    keys = as_tokens(src)
    keys_pe = keys + key_pe
    projections = (first.cross_attn_token_to_image.k_proj(keys_pe), first.cross_attn_token_to_image.v_proj(keys),
                   first.cross_attn_image_to_token.q_proj(keys_pe))
    return PreparedImage(keys, tuple(src.shape[-2:]), key_pe, projections, tuple(high_res))


def decode(model, prepared: PreparedImage, sparse: torch.Tensor,
           multimask_output: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``MaskDecoder.forward``'s (masks, iou_pred) for an image prepared by ``prepare``."""
    decoder = model.sam_mask_decoder
    if decoder.pred_obj_scores:
        output_tokens = torch.cat([decoder.obj_score_token.weight, decoder.iou_token.weight,
                                   decoder.mask_tokens.weight], dim=0)
        s = 1
    else:
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        s = 0
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)
    (h, w), (b, _, c) = prepared.size, prepared.keys.shape

    hs, src = _transformer(decoder.transformer, prepared, tokens)
    iou_token_out = hs[:, s, :]
    mask_tokens_out = hs[:, s + 1: (s + 1 + decoder.num_mask_tokens), :]

    src = src.transpose(1, 2).view(b, c, h, w)
    if not decoder.use_high_res_features:
        upscaled_embedding = decoder.output_upscaling(src)
    else:
        dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
        feat_s0, feat_s1 = prepared.high_res
        upscaled_embedding = act1(_layer_norm_2d_(ln1, _upscale(dc1, src).add_(feat_s1)))
        upscaled_embedding = act2(_upscale(dc2, upscaled_embedding).add_(feat_s0))
    hyper_in = torch.stack([decoder.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :])
                            for i in range(decoder.num_mask_tokens)], dim=1)
    b, c, h, w = upscaled_embedding.shape
    masks = (hyper_in @ upscaled_embedding.view(b, c, h * w)).view(b, -1, h, w)
    iou_pred = decoder.iou_prediction_head(iou_token_out)

    # MaskDecoder.forward's choice of outputs (eval mode).
    if multimask_output:
        return masks[:, 1:, :, :], iou_pred[:, 1:]
    if decoder.dynamic_multimask_via_stability:
        return decoder._dynamic_multimask_via_stability(masks, iou_pred)
    return masks[:, 0:1, :, :], iou_pred[:, 0:1]


def _upscale(conv: torch.nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for the decoder's 2x2, stride-2 transposed convolutions, as one matrix product and a pixel
    shuffle: each input pixel writes its own 2x2 block, so these are the same sums (equal within float rounding,
    tests/test_segmenter.py), at a third to a half of the convolution kernel's time there."""
    if conv.kernel_size != (2, 2) or conv.stride != (2, 2) or conv.padding != (0, 0) or conv.groups != 1:
        return conv(x)
    b, c_in, h, w = x.shape
    c_out = conv.out_channels
    blocks = x.flatten(2).transpose(1, 2) @ conv.weight.reshape(c_in, c_out * 4)  # (b, h*w, c_out*2*2)
    blocks = blocks.view(b, h, w, c_out, 2, 2).permute(0, 3, 1, 4, 2, 5)
    out = torch.empty((b, c_out, h, 2, w, 2), dtype=x.dtype, device=x.device)  # the shuffle adds the bias
    torch.add(blocks, conv.bias.view(1, c_out, 1, 1, 1, 1), out=out)
    return out.view(b, c_out, 2 * h, 2 * w)


def _layer_norm_2d_(norm, x: torch.Tensor) -> torch.Tensor:
    """sam2's ``LayerNorm2d`` (the same operations: the same numbers) in place on ``x``, which nothing else holds."""
    u = x.mean(1, keepdim=True)
    x.sub_(u)
    s = x.pow(2).mean(1, keepdim=True)
    x.div_(torch.sqrt(s + norm.eps))
    return x.mul_(norm.weight[:, None, None]).add_(norm.bias[:, None, None])


def _transformer(transformer, prepared: PreparedImage, point_embedding: torch.Tensor):
    """``TwoWayTransformer.forward`` with the first layer's image-only terms taken from ``prepared``."""
    keys, key_pe = prepared.keys, prepared.key_pe
    queries = point_embedding
    for index, layer in enumerate(transformer.layers):
        queries, keys = _two_way_block(layer, queries, keys, point_embedding, key_pe,
                                       prepared if index == 0 else None)
    q = queries + point_embedding
    k = keys + key_pe
    attn_out = transformer.final_attn_token_to_image(q=q, k=k, v=keys)
    queries = queries + attn_out
    queries = transformer.norm_final_attn(queries)
    return queries, keys


def _two_way_block(layer, queries, keys, query_pe, key_pe, prepared: PreparedImage | None):
    """``TwoWayAttentionBlock.forward``; in the first layer the image tokens' projections are precomputed."""
    if layer.skip_first_layer_pe:
        queries = layer.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        attn_out = layer.self_attn(q=q, k=q, v=queries)
        queries = queries + attn_out
    queries = layer.norm1(queries)

    q = queries + query_pe
    if prepared is not None:
        k_proj, v_proj, image_q_proj = prepared.first_layer
        attn_out = _attention(layer.cross_attn_token_to_image, layer.cross_attn_token_to_image.q_proj(q), k_proj,
                              v_proj)
    else:
        k = keys + key_pe  # sam2 adds this twice per layer; the second attention below reuses it
        attn_out = layer.cross_attn_token_to_image(q=q, k=k, v=keys)
    queries = queries + attn_out
    queries = layer.norm2(queries)

    mlp_out = layer.mlp(queries)
    queries = queries + mlp_out
    queries = layer.norm3(queries)

    q = queries + query_pe
    if prepared is not None:
        attn = layer.cross_attn_image_to_token
        attn_out = _attention(attn, image_q_proj, attn.k_proj(q), attn.v_proj(queries))
    else:
        attn_out = layer.cross_attn_image_to_token(q=k, k=q, v=queries)
    keys = keys + attn_out
    keys = layer.norm4(keys)
    return queries, keys


def _attention(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Attention.forward`` after its input projections (eval mode: no dropout)."""
    q = attn._separate_heads(q, attn.num_heads)
    k = attn._separate_heads(k, attn.num_heads)
    v = attn._separate_heads(v, attn.num_heads)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
    return attn.out_proj(attn._recombine_heads(out))
