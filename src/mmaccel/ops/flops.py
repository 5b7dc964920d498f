"""Analytic FLOPs of a vision-language model's prefill and decode (1 multiply-add = 2 FLOPs).

Per decoder layer over n tokens (d hidden, m FFN width, d_kv = kv heads x head dim, d_a = heads x head dim):
projections ``n d (2 d_a + 2 d_kv)`` MACs (q, o and the grouped k, v), attention ``2 n n_k d_a`` (scores and
values, n_k keys; the full square in prefill, as the papers count it), FFN ``3 n d m`` (gated, SwiGLU) or
``2 n d m``. With d_kv = d_a = d and a plain FFN this is FastV's ``4nd^2 + 2n^2d + 2ndm`` (arXiv 2403.06764
section 4.2); SparseVLM's code uses the gated ``3ndm``. A ViT block is the same with bidirectional attention;
a block that merges tokens between its attention and its MLP (ToMe, EViT) runs the attention part on the
tokens entering it and the MLP on the tokens leaving it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class TransformerShape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    gated_mlp: bool

    def layer_macs(self, n_query: int, n_keys: int | None = None) -> float:
        return self.attention_macs(n_query, n_keys) + self.mlp_macs(n_query)

    def attention_macs(self, n_query: int, n_keys: int | None = None) -> float:
        """q, k, v, o projections and the attention itself over ``n_keys`` keys."""
        n_keys = n_query if n_keys is None else n_keys
        d_attn = self.heads * self.head_dim
        d_kv = self.kv_heads * self.head_dim
        projections = n_query * self.hidden * (2 * d_attn + 2 * d_kv)
        attention = 2 * n_query * n_keys * d_attn
        return float(projections + attention)

    def mlp_macs(self, n_tokens: int) -> float:
        return float((3 if self.gated_mlp else 2) * n_tokens * self.hidden * self.intermediate)


@dataclass(frozen=True)
class ModelShape:
    """Shapes of a LLaVA-like model: vision tower, two-layer projector, decoder, LM head."""

    vision: TransformerShape
    vision_tokens: int  # tokens per image inside the tower (patches + CLS)
    projector_in: int
    projector_hidden: int
    decoder: TransformerShape
    vocab: int

    def vision_flops(self, n_images: int, tower_tokens: list[int] | None = None) -> float:
        """The tower on ``n_images`` images; ``tower_tokens`` (per image: entering each block, then leaving the
        tower) when a method reduces tokens inside it, else ``vision_tokens`` in every block."""
        if not tower_tokens:
            return 2.0 * n_images * self.vision.layers * self.vision.layer_macs(self.vision_tokens)
        if len(tower_tokens) != self.vision.layers + 1:
            raise ValueError(f"tower_tokens needs {self.vision.layers + 1} counts, got {len(tower_tokens)}")
        macs = sum(
            self.vision.attention_macs(n_in) + self.vision.mlp_macs(n_out)
            for n_in, n_out in itertools.pairwise(tower_tokens)
        )
        return 2.0 * n_images * macs

    def projector_flops(self, n_tokens: int) -> float:
        macs = n_tokens * (self.projector_in * self.projector_hidden + self.projector_hidden * self.decoder.hidden)
        return 2.0 * macs

    def prefill_flops(
        self, layer_tokens: list[int], n_images: int, projected_tokens: int, tower_tokens: list[int] | None = None
    ) -> float:
        """Prefill of one sample: ``layer_tokens`` = sequence length each decoder layer processes;
        ``tower_tokens`` as in :meth:`vision_flops`."""
        decoder = sum(self.decoder.layer_macs(n) for n in layer_tokens)
        lm_head = self.decoder.hidden * self.vocab  # logits of the last position only
        vision = self.vision_flops(n_images, tower_tokens)
        return vision + self.projector_flops(projected_tokens) + 2.0 * (decoder + lm_head)

    def decode_flops(self, layer_cache: list[int], new_tokens: int) -> float:
        """Decoding ``new_tokens`` tokens; ``layer_cache`` = cached tokens per layer when decoding starts."""
        total = 0.0
        for step in range(new_tokens):
            total += sum(self.decoder.layer_macs(1, n + step + 1) for n in layer_cache)
            total += self.decoder.hidden * self.vocab
        return 2.0 * total


def llava_shape(config) -> ModelShape:
    """The :class:`ModelShape` of a ``LlavaConfig`` (CLIP tower, MLP projector, Llama-like decoder)."""
    vision, text = config.vision_config, config.text_config
    n_patches = (vision.image_size // vision.patch_size) ** 2
    text_heads = text.num_attention_heads
    return ModelShape(
        vision=TransformerShape(
            layers=vision.num_hidden_layers,
            hidden=vision.hidden_size,
            intermediate=vision.intermediate_size,
            heads=vision.num_attention_heads,
            kv_heads=vision.num_attention_heads,
            head_dim=vision.hidden_size // vision.num_attention_heads,
            gated_mlp=False,
        ),
        vision_tokens=n_patches + 1,
        projector_in=vision.hidden_size,
        projector_hidden=text.hidden_size,
        decoder=TransformerShape(
            layers=text.num_hidden_layers,
            hidden=text.hidden_size,
            intermediate=text.intermediate_size,
            heads=text_heads,
            kv_heads=getattr(text, "num_key_value_heads", None) or text_heads,
            head_dim=getattr(text, "head_dim", None) or text.hidden_size // text_heads,
            gated_mlp=True,
        ),
        vocab=text.vocab_size,
    )
