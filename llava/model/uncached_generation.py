"""Greedy decoding without a KV cache: the whole sequence is recomputed for every new token, as the
paper's public release decodes. It is the reference the cached `generate` must reproduce token for
token, and the performance anchor of `llava.bench.generation`."""

from __future__ import annotations

import torch


@torch.no_grad()
def generate_without_cache(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    images: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 16,
) -> torch.Tensor:
    """Greedy decoding that recomputes the full sequence at every step (no KV cache).

    Returns only the new tokens `[B, n]`; rows that emitted EOS are padded with the pad token,
    as the library's `generate` does.
    """
    mm = model.prepare_multimodal_inputs(input_ids, images, attention_mask, padding_side="left")
    embeds, mask, image_mask, stream = mm.inputs_embeds, mm.attention_mask, mm.image_mask, mm.vision_stream
    eos = model.generation_config.eos_token_id
    eos = set([eos] if isinstance(eos, int) else (eos or []))
    pad = model.generation_config.pad_token_id
    finished = torch.zeros(embeds.shape[0], dtype=torch.bool, device=embeds.device)
    tokens = []
    for _ in range(max_new_tokens):
        extra = {}
        if model._uses_vision_stream and stream is not None:
            extra = {"vision_stream": stream, "image_mask": image_mask}
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        logits = model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=position_ids,
            use_cache=False,
            logits_to_keep=1,
            **extra,
        ).logits[:, -1]  # [B, V]
        next_token = logits.argmax(-1)
        if pad is not None:
            next_token = torch.where(finished, torch.full_like(next_token, pad), next_token)
        tokens.append(next_token)
        finished |= torch.tensor([t in eos for t in next_token.tolist()], device=finished.device)
        embeds = torch.cat([embeds, model.get_input_embeddings()(next_token)[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        image_mask = torch.cat([image_mask, image_mask.new_zeros(image_mask.shape[0], 1)], dim=1)
        if stream is not None:
            stream = torch.cat([stream, stream.new_zeros(stream.shape[0], 1, stream.shape[-1])], dim=1)
        if finished.all():
            break
    return torch.stack(tokens, dim=1)
