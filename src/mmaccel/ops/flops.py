"""Analytic FLOPs of a vision-language model's prefill and decode (1 multiply-add = 2 FLOPs).

Per decoder layer over n tokens (d hidden, m FFN width, d_kv = kv heads x head dim, d_a = heads x head dim):
projections ``n d (2 d_a + 2 d_kv)`` MACs (q, o and the grouped k, v), attention ``2 n n_k d_a`` (scores and
values, n_k keys; the full square in prefill, as the papers count it), FFN ``3 n d m`` (gated, SwiGLU) or
``2 n d m``. With d_kv = d_a = d and a plain FFN this is FastV's ``4nd^2 + 2n^2d + 2ndm`` (arXiv 2403.06764
section 4.2); SparseVLM's code uses the gated ``3ndm``. A ViT block is the same with bidirectional attention;
a block that merges tokens between its attention and its MLP (ToMe, EViT) runs the attention part on the
tokens entering it and the MLP on the tokens leaving it.

The vision side of a sample is a :class:`VisualWork`: the sequences its images, tiles and frames put through
the tower (:class:`TowerRun`), the patches embedded and the tokens entering the projector, all read from the
sample's own inputs by :func:`mmaccel.models.shape.visual_work`. What is counted: every linear layer
(tower, projector, decoder, the last position's LM head), the patch-embedding convolution, attention scores
and values (per attention sequence: an image, a tile, a frame, or a window of a window-attention block) and a
SigLIP attention-pooling head. What is not: normalisations, activations, rotary and M-RoPE position tables,
interpolation (anyres downsizing, video pooling), gathers and the methods' own scoring. ``docs/flops.md``
lists the rules per family.
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
        return self.projection_macs(n_query) + self.score_macs(n_query, n_keys)

    def projection_macs(self, n_tokens: int) -> float:
        """The q, k, v and o projections of ``n_tokens`` tokens."""
        d_attn = self.heads * self.head_dim
        d_kv = self.kv_heads * self.head_dim
        return float(n_tokens * self.hidden * (2 * d_attn + 2 * d_kv))

    def score_macs(self, n_query: int, n_keys: int) -> float:
        """Attention scores and the weighted sum of values: ``n_query`` queries over ``n_keys`` keys."""
        return float(2 * n_query * n_keys * self.heads * self.head_dim)

    def mlp_macs(self, n_tokens: int) -> float:
        return float((3 if self.gated_mlp else 2) * n_tokens * self.hidden * self.intermediate)


@dataclass(frozen=True)
class TowerRun:
    """``count`` sequences of ``tokens`` tokens each through the vision tower (an image, a tile, a video frame or
    a temporal patch each; CLS included). ``windows``: the token count of each attention window of one sequence
    in the tower's window-attention blocks (Qwen2.5-VL); empty when every block attends over the sequence."""

    count: int
    tokens: int
    windows: tuple[int, ...] = ()


@dataclass(frozen=True)
class VisualWork:
    """The vision side of one sample as its inputs determine it: tower sequences, patches embedded (CLS
    excluded), tokens entering the projector (before any method) and visual items (images and videos)."""

    tower: tuple[TowerRun, ...] = ()
    patches: int = 0
    projected: int = 0
    items: int = 0

    def __add__(self, other: VisualWork) -> VisualWork:
        return VisualWork(
            self.tower + other.tower,
            self.patches + other.patches,
            self.projected + other.projected,
            self.items + other.items,
        )

    @property
    def sequences(self) -> int:
        return sum(run.count for run in self.tower)


@dataclass(frozen=True)
class ModelShape:
    """Shapes of a vision-language model: patch embedding, vision tower, projector, decoder, LM head.

    ``patch_macs``: MACs of embedding one patch (channels x patch pixels x tower width). ``window_blocks``:
    tower blocks with window attention. ``pooling_head``: a SigLIP attention-pooling head runs on every tower
    sequence. ``projector``: the (in, out) widths of the projector's linear layers, applied to groups of
    ``projector_group`` tokens (the Qwen merger concatenates merge_size**2 patches).
    ``reduces_before_projector``: a pre-LLM method's kept tokens go through the projector (LLaVA-1.5);
    otherwise the projector runs on every token and methods act on its output. ``image_work``: one image of a
    fixed-resolution model (LLaVA-1.5), None where the inputs decide (anyres tiles, dynamic resolution).
    """

    vision: TransformerShape
    patch_macs: int
    projector: tuple[tuple[int, int], ...]
    decoder: TransformerShape
    vocab: int
    projector_group: int = 1
    window_blocks: tuple[int, ...] = ()
    pooling_head: bool = False
    reduces_before_projector: bool = False
    image_work: VisualWork | None = None

    @property
    def vision_tokens(self) -> int | None:
        """Tokens of one tower sequence of a fixed-resolution model (CLS included), else None."""
        return self.image_work.tower[0].tokens if self.image_work is not None else None

    def fixed_work(self, n_images: int) -> VisualWork:
        """The :class:`VisualWork` of ``n_images`` images of a fixed-resolution model."""
        if self.image_work is None:
            raise ValueError("this model's visual work depends on its inputs; use mmaccel.models.shape.visual_work")
        one = self.image_work
        return VisualWork(
            tuple(TowerRun(r.count * n_images, r.tokens, r.windows) for r in one.tower),
            one.patches * n_images,
            one.projected * n_images,
            one.items * n_images,
        )

    # -- vision ------------------------------------------------------------------------------------------------
    def block_macs(self, block: int, run: TowerRun, n_in: int, n_out: int) -> float:
        """One tower block on one sequence of ``run``: attention over ``n_in`` tokens, MLP on ``n_out``."""
        if block in self.window_blocks and run.windows:
            scores = sum(self.vision.score_macs(w, w) for w in run.windows)
        else:
            scores = self.vision.score_macs(n_in, n_in)
        return self.vision.projection_macs(n_in) + scores + self.vision.mlp_macs(n_out)

    def head_macs(self, n_tokens: int) -> float:
        """A SigLIP attention-pooling head: one probe query over ``n_tokens`` keys, then an MLP on it."""
        if not self.pooling_head:
            return 0.0
        d = self.vision.hidden
        return 2 * n_tokens * d * d + 2 * d * d + 2 * n_tokens * d + self.vision.mlp_macs(1)

    def vision_flops(self, work: VisualWork | int, tower_tokens: list[int] | None = None) -> float:
        """Patch embedding, tower blocks and pooling head of ``work`` (an int: that many images of a
        fixed-resolution model). ``tower_tokens`` (a method inside the tower: tokens entering each block, then
        leaving the tower; the same for every sequence) replaces the sequence length a run keeps through every
        block."""
        if isinstance(work, int):
            work = self.fixed_work(work)
        if tower_tokens and len(tower_tokens) != self.vision.layers + 1:
            raise ValueError(f"tower_tokens needs {self.vision.layers + 1} counts, got {len(tower_tokens)}")
        macs = float(work.patches * self.patch_macs)
        for run in work.tower:
            counts = tower_tokens or [run.tokens] * (self.vision.layers + 1)
            pairs = enumerate(itertools.pairwise(counts))  # block, (tokens entering, tokens leaving)
            blocks = sum(self.block_macs(block, run, n_in, n_out) for block, (n_in, n_out) in pairs)
            macs += run.count * (blocks + self.head_macs(counts[-1]))
        return 2.0 * macs

    def projector_flops(self, n_tokens: int) -> float:
        """The projector on ``n_tokens`` tower tokens (``n_tokens / projector_group`` rows)."""
        rows = n_tokens / self.projector_group
        return 2.0 * rows * sum(d_in * d_out for d_in, d_out in self.projector)

    # -- language model ----------------------------------------------------------------------------------------
    def prefill_flops(
        self,
        layer_tokens: list[int],
        n_images: int | None = None,
        projected_tokens: int | None = None,
        tower_tokens: list[int] | None = None,
        *,
        work: VisualWork | None = None,
    ) -> float:
        """Prefill of one sample: ``layer_tokens`` = sequence length each decoder layer processes; ``work`` the
        sample's vision side (or ``n_images`` fixed-resolution images); ``projected_tokens`` the tokens entering
        the projector when a method reduced them (default: ``work.projected``); ``tower_tokens`` as in
        :meth:`vision_flops`."""
        if work is None:
            work = self.fixed_work(n_images or 0)
        projected = work.projected if projected_tokens is None else projected_tokens
        decoder = sum(self.decoder.layer_macs(n) for n in layer_tokens)
        lm_head = self.decoder.hidden * self.vocab  # logits of the last position only
        vision = self.vision_flops(work, tower_tokens)
        return vision + self.projector_flops(projected) + 2.0 * (decoder + lm_head)

    def decode_flops(self, layer_cache: list[int], new_tokens: int) -> float:
        """Decoding ``new_tokens`` tokens; ``layer_cache`` = cached tokens per layer when decoding starts."""
        total = 0.0
        for step in range(new_tokens):
            total += sum(self.decoder.layer_macs(1, n + step + 1) for n in layer_cache)
            total += self.decoder.hidden * self.vocab
        return 2.0 * total

    def kv_bytes(self, layer_tokens: list[int], element_bytes: int) -> int:
        """Keys and values held for one sample with ``layer_tokens`` cached tokens per decoder layer."""
        per_token = 2 * self.decoder.kv_heads * self.decoder.head_dim * element_bytes
        return int(sum(layer_tokens) * per_token)
