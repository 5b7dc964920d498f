"""What a method is: the stage it acts at, what it needs, one budget knob, and the hook of its stage.

A method is a dataclass whose fields are its hyper-parameters plus the standard ``budget``. It overrides only the
hook of its stage and never asks which model it runs on: the engine hands it tensors and the adapter's facts.

* ``VISUAL_OUTPUT`` methods implement :meth:`TokenMethod.reduce_visual` on the visual tokens of each image,
  before the language model (at the projector input for LLaVA-1.5).
* ``LLM_PREFILL`` methods implement :meth:`TokenMethod.prune_layer`, called at each layer of
  :meth:`TokenMethod.prune_layers` during prefill, with attention rows of the previous layer when ``needs`` asks.
* ``VISION_ENCODER`` methods implement :meth:`TokenMethod.tower_plan` (which vision blocks reduce, to how many
  tokens) and :meth:`TokenMethod.reduce_block`, called inside those blocks between the attention and the MLP.
"""

from __future__ import annotations

import enum
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar

import torch

from mmaccel.errors import ConfigError, NotSupportedError
from mmaccel.ops.select import keep_count, topk_keep, topk_mask_in_groups

if TYPE_CHECKING:
    from mmaccel.models.base import ModelAdapter


BUDGET_CONVENTIONS = ("processed", "after_pruning")  # how a layer average of visual tokens is counted


class Stage(enum.Flag):
    """Where a method acts, in the order data flows."""

    FRAMES = enum.auto()  # before the processor (keyframe selection)
    VISION_ENCODER = enum.auto()  # inside the vision tower
    VISUAL_OUTPUT = enum.auto()  # after the vision tower, before the language model
    LLM_PREFILL = enum.auto()  # inside the language model, during prefill
    KV_CACHE = enum.auto()  # cache eviction during decode


@dataclass(frozen=True)
class Needs:
    """What a method needs the engine to capture for it.

    For ``VISION_ENCODER`` methods the vision captures are taken in every block the method reduces at.
    """

    vision_cls_attention: bool = False  # CLS-row attention of the feature layer, per head
    vision_keys: bool = False  # keys of the feature layer, mean over heads
    vision_cls_feature: bool = False  # the CLS hidden state of the feature layer
    llm_attention_rows: bool = False  # attention rows of chosen queries at layer K - 1
    llm_query_tokens: bool = False  # query tokens picked once from the layer-0 input (select_queries)
    vision_reader_qk: bool = False  # q/k of the block after the feature layer, heads concatenated (PruMerge)

    @property
    def cls_token(self) -> bool:
        return self.vision_cls_attention or self.vision_cls_feature


@dataclass
class VisualTokens:
    """The visual tokens of a batch of images where a ``VISUAL_OUTPUT`` method acts.

    Shapes: I images, P visual tokens per image (raster order of a ``grid`` = (h, w) patch grid), D channels.
    """

    features: torch.Tensor  # (I, P, D)
    grid: tuple[int, int]  # (h, w), h * w == P
    cls_attention: torch.Tensor | None = None  # (I, H, P) CLS attention over the visual tokens
    keys: torch.Tensor | None = None  # (I, P, d) head-mean keys of the visual tokens
    cls_feature: torch.Tensor | None = None  # (I, D) CLS hidden state of the feature layer
    # From the block that reads the feature layer's output, its heads concatenated into one:
    reader_cls_attention: torch.Tensor | None = None  # (I, P) CLS attention over the visual tokens
    reader_keys: torch.Tensor | None = None  # (I, P, C) keys, C = heads x head dim
    frame_ids: torch.Tensor | None = None  # (I, P) long: frame (temporal index t) of each token; video items

    # Towers without CLS token (Qwen2-VL, Qwen2.5-VL): ``cls_attention`` (and ``reader_cls_attention``, its head
    # mean) hold the attention each token receives in a full-attention block, averaged over the queries, summed
    # over the patches merged into the token; ``cls_feature`` is None. ``grid`` is (t * h, w) for t frames.

    @property
    def n_images(self) -> int:
        return self.features.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.features.shape[1]


@dataclass
class VisualReduction:
    """Output of a ``VISUAL_OUTPUT`` method.

    ``source`` is the original token each output token stands for (its own index for a kept token, the
    representative for a merged one, -1 for a token that is not a visual token such as CLS); ``groups`` maps
    every input token to the output token it went into (-1 when dropped), for sizes and pictures.
    """

    features: torch.Tensor  # (I, P', D)
    source: torch.Tensor  # (I, P') long
    groups: torch.Tensor  # (I, P) long
    counts: list[int] | None = None  # tokens per image when they differ: image i uses features[i, :counts[i]]

    @classmethod
    def select(cls, tokens: VisualTokens, keep: torch.Tensor) -> VisualReduction:
        """Plain selection: keep: (I, P') sorted indices into the P visual tokens."""
        n_images, n_keep = keep.shape
        features = tokens.features.gather(1, keep[..., None].expand(-1, -1, tokens.features.shape[-1]))
        groups = torch.full((n_images, tokens.n_tokens), -1, dtype=torch.long, device=keep.device)
        groups.scatter_(1, keep, torch.arange(n_keep, device=keep.device).expand(n_images, -1))
        return cls(features=features, source=keep, groups=groups)


@dataclass
class LayerTokens:
    """The sequence entering a pruning layer of the language model (B rows, L tokens)."""

    layer: int
    hidden: torch.Tensor  # (B, L, D)
    visual_index: torch.Tensor  # (B, L) long: image number within its row for visual tokens, -1 otherwise
    valid: torch.Tensor  # (B, L) bool: real tokens (False for padding)
    attention: torch.Tensor | None  # (B, H, R, L) float32 attention rows from layer - 1, when needed
    query_rows: torch.Tensor | None  # (B, R) long: positions of those rows; -1 pads (its attention row is 0)
    origin: torch.Tensor | None = None  # (B, L) long: position entering layer 0, -1 for a token made by merging
    entry_counts: torch.Tensor | None = None  # (B, G) long: visual tokens of each image entering layer 0
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None  # (cos, sin), each (B|1, L, d)
    n_layers: int | None = None  # decoder layers of the language model


@dataclass
class LayerReduction:
    """Output of :meth:`TokenMethod.prune_layer` for a method that also inserts merged tokens.

    Batched form (the engine handles it without any per-row work): ``keep`` (B, L) bool, the kept tokens of the
    layer's input; ``weights`` (B, M, L), ``before`` (B, M) long and ``source`` (B, M) long for M merged-token
    slots, ``source`` -1 (and ``weights`` 0) in the slots a row does not use. Per-row form: ``keep[b]`` (K_b,) kept
    positions, ``weights[b]`` (M_b, L), ``before[b]`` and ``source[b]`` (M_b,).

    Merged token m of row b is ``weights[b][m] @ hidden[b]``, placed right before input position
    ``before[b][m]`` (L for the end; several merged tokens before the same position keep their order), and stands
    for input token ``source[b][m]``: its image, and its RoPE position when positions are kept.
    """

    keep: torch.Tensor | list[torch.Tensor]
    weights: torch.Tensor | list[torch.Tensor]
    before: torch.Tensor | list[torch.Tensor]
    source: torch.Tensor | list[torch.Tensor]

    @property
    def is_batched(self) -> bool:
        return isinstance(self.keep, torch.Tensor)

    def batched(self, length: int) -> LayerReduction:
        """This reduction in the batched form, for a layer input of ``length`` tokens (per-row form: one pass
        over the rows)."""
        if isinstance(self.keep, torch.Tensor):
            return self
        assert isinstance(self.weights, list) and isinstance(self.before, list) and isinstance(self.source, list)
        keep = keep_mask(self.keep, length)
        device = keep.device
        n_merged = max((w.shape[0] for w in self.weights), default=0)
        dtype = self.weights[0].dtype if self.weights else torch.float32
        weights = torch.zeros(len(self.keep), n_merged, length, dtype=dtype, device=device)
        before = torch.zeros(len(self.keep), n_merged, dtype=torch.long, device=device)
        source = torch.full((len(self.keep), n_merged), -1, dtype=torch.long, device=device)
        for row, (row_weights, row_before, row_source) in enumerate(zip(self.weights, self.before, self.source)):
            count = row_weights.shape[0]
            weights[row, :count] = row_weights.to(device)
            before[row, :count] = row_before.to(device)
            source[row, :count] = row_source.to(device)
        return LayerReduction(keep=keep, weights=weights, before=before, source=source)


def keep_mask(rows: list[torch.Tensor], length: int) -> torch.Tensor:
    """Kept positions per row, each (K_b,), as a (B, L) bool mask (one pass over the rows)."""
    mask = torch.zeros(len(rows), length, dtype=torch.bool, device=rows[0].device if rows else None)
    for row, positions in enumerate(rows):
        mask[row, positions.to(mask.device)] = True
    return mask


@dataclass
class BlockTokens:
    """The tokens of a vision block where a ``VISION_ENCODER`` method acts: after the attention residual, before
    the MLP. Shapes: I images, N tokens (CLS at 0 when ``cls_token``), D channels."""

    layer: int  # index of the block in the vision tower
    hidden: torch.Tensor  # (I, N, D) x + attention(x)
    sizes: torch.Tensor  # (I, N, 1) float: original tokens each token stands for (1 before any merge)
    cls_token: bool
    keys: torch.Tensor | None = None  # (I, N, d) the block's attention keys, mean over heads
    cls_attention: torch.Tensor | None = None  # (I, H, N) float32 CLS-row attention of the block

    @property
    def n_tokens(self) -> int:
        return self.hidden.shape[1]


@dataclass
class BlockReduction:
    """Output of :meth:`TokenMethod.reduce_block`: N tokens reduced to N' inside a vision block."""

    hidden: torch.Tensor  # (I, N', D) enters the block's MLP
    sizes: torch.Tensor  # (I, N', 1) original tokens each output token stands for
    index: torch.Tensor  # (I, N) long: output token each input token went into, -1 when dropped
    source: torch.Tensor  # (I, N') long: input token each output token continues, -1 for a new token


def layer_average(layer_tokens: Sequence[int], convention: str) -> float:
    """Mean visual tokens per decoder layer of ``layer_tokens`` (the tokens each layer processes).

    ``"processed"``: the plain mean. ``"after_pruning"`` (SparseVLM's "Equal Tokens"): layer l counts the tokens
    left after the pruning its attention scores, i.e. those entering layer l + 1; the last layer its own.
    """
    if convention not in BUDGET_CONVENTIONS:
        raise ValueError(f"convention={convention!r} is not allowed; use one of {', '.join(BUDGET_CONVENTIONS)}")
    if not layer_tokens:
        raise ValueError("layer_tokens is empty")
    counts = list(layer_tokens) if convention == "processed" else [*layer_tokens[1:], layer_tokens[-1]]
    return sum(counts) / len(counts)


def normal_budget(budget: object) -> object:
    """``budget`` as a Python ``int`` or ``float`` when it is a numeric scalar of another type (``np.int64(16)``
    is 16, ``np.float32(0.5)`` is 0.5); anything else (``True``, a string) unchanged, for :func:`_check_budget`
    to refuse."""
    if isinstance(budget, bool) or type(budget) in (int, float):
        return budget
    if isinstance(budget, numbers.Integral):
        return int(budget)
    if isinstance(budget, numbers.Real):
        return float(budget)
    return budget


def _check_budget(budget: object) -> None:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise ConfigError(f"budget must be an int (tokens kept per image) or a float in (0, 1], got {budget!r}")
    if isinstance(budget, int) and budget < 1:
        raise ConfigError(f"budget={budget} is out of range: an int budget is the tokens kept per image, >= 1")
    if isinstance(budget, float) and not 0.0 < budget <= 1.0:
        raise ConfigError(f"budget={budget} is out of range: a float budget is a fraction in (0, 1]")


@dataclass
class TokenMethod:
    """Base of every method: a stage, its needs and a validated ``budget``.

    ``budget``: an ``int`` is the number of visual tokens kept per image (entering the language model for
    pre-LLM methods, after layer K for in-LLM methods); a ``float`` in (0, 1] is the fraction kept. On tiled
    models (LLaVA-NeXT, LLaVA-OneVision) the budget applies to every tile or video frame instead, a smaller
    unit keeping all its tokens (:mod:`mmaccel.engine.units`).
    """

    name: ClassVar[str] = ""
    stage: ClassVar[Stage] = Stage.VISUAL_OUTPUT
    needs: ClassVar[Needs] = Needs()
    has_positions_option: ClassVar[bool] = False
    # How a layer average of visual tokens is counted for this method's budget (docs/budgets.md):
    # "processed" (the tokens each decoder layer processes) or "after_pruning" (each layer's tokens after the
    # pruning its attention scores, SparseVLM's "Equal Tokens").
    budget_convention: ClassVar[str] = "processed"

    budget: int | float = 1.0

    def __post_init__(self) -> None:
        self.budget = normal_budget(self.budget)
        _check_budget(self.budget)

    # -- budget ----------------------------------------------------------------------------------------------
    def keep_count(self, n_tokens: int) -> int:
        """Visual tokens kept out of ``n_tokens`` under this method's budget."""
        if isinstance(self.budget, int) and not isinstance(self.budget, bool) and self.budget > n_tokens:
            # validate() bounds an int budget by the largest image (or tile); a smaller tile (cut by unpadding)
            # or a pooled video frame keeps all of its tokens
            return n_tokens
        try:
            return keep_count(self.budget, n_tokens)
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def keeps_all(self, n_tokens: int) -> bool:
        return self.keep_count(n_tokens) >= n_tokens

    def full_budget(self) -> bool:
        """Whether the budget alone keeps every token (``budget=1.0``, no option that sets the counts instead)."""
        return isinstance(self.budget, float) and self.budget >= 1.0 and self.keeps_all(1)

    def keeps_everything(self) -> bool:
        """Whether the budget keeps every token of every input (``budget=1.0``): the engine then runs nothing of
        the method, no probe and no scorer, and the output is bit-identical to the unmodified model's. Options
        that act whatever the budget (a preset schedule) make :meth:`keeps_all` false, and so this."""
        full = isinstance(self.budget, float) and self.budget >= 1.0
        return full and self.stage != Stage.FRAMES and self.keeps_all(1)

    def keep_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """:meth:`keep_count` of every entry of ``counts`` (long, any shape; 0 stays 0), with one host read of the
        distinct counts instead of one per entry."""
        distinct = torch.unique(counts)  # sorted
        kept = [self.keep_count(n) if n > 0 else 0 for n in distinct.tolist()]
        return torch.tensor(kept, device=counts.device)[torch.searchsorted(distinct, counts)]

    def budget_tokens(self, n_tokens: int) -> float:
        """Visual tokens the budget names for a unit of ``n_tokens``, unrounded: ``min(budget, n_tokens)`` for an
        int, ``budget * n_tokens`` for a float."""
        if isinstance(self.budget, int) and not isinstance(self.budget, bool):
            return float(min(self.budget, n_tokens))
        return float(self.budget) * n_tokens

    def requested_tokens(self, n_tokens: int, n_layers: int) -> float | None:
        """Layer-averaged visual tokens the budget asks for on one unit (image, tile or frame) of ``n_tokens`` in a
        language model of ``n_layers`` layers, counted as :attr:`budget_convention` says; None when no budget sets
        the count (an adaptive method, or counts given directly).

        Pre-LLM and in-tower methods ask for :meth:`budget_tokens` in every layer; in-LLM methods ask for them
        from their first pruning layer on, every earlier layer processing the whole unit.
        """
        asked = self.budget_tokens(n_tokens)
        layers = self.prune_layers(n_layers) if Stage.LLM_PREFILL in self.stage else ()
        if not layers:
            return asked
        first = min(layers)
        return (first * n_tokens + (n_layers - first) * asked) / n_layers

    def planned_layer_tokens(self, n_tokens: int, n_layers: int) -> list[int] | None:
        """In-LLM methods: the visual tokens of one unit of ``n_tokens`` that each decoder layer will process in
        prefill, known before the layers run (the engine checks the budget with it); None for methods whose
        counts are known once the prompt reaches the language model, and for counts that depend on the data.

        Default: the whole unit before the first pruning layer, :meth:`keep_count` from there on.
        """
        layers = self.prune_layers(n_layers) if Stage.LLM_PREFILL in self.stage else ()
        if not layers:
            return None
        first = min(layers)
        kept = n_tokens if self.keeps_all(n_tokens) else self.keep_count(n_tokens)
        return [n_tokens] * first + [kept] * (n_layers - first)

    # -- support: which model families this method runs on, and why not elsewhere ----------------------------------
    def unsupported_reason(self, adapter: ModelAdapter) -> str | None:
        """Why this method cannot run on ``adapter``'s model, or None when it can.

        Only what the model lacks counts here (a CLS token, vision blocks the engine can reduce inside, a
        resolution that follows the image); hyper-parameter ranges are :meth:`validate`'s. :meth:`validate` raises
        this reason as ``NotSupportedError`` before the model is touched, and the README's support matrix is
        generated from it (``python scripts/support_matrix.py``). Subclasses extend it with ``super()``.
        """
        if self.needs.cls_token and not adapter.has_cls_token() and not adapter.scores_without_cls():
            return f"needs a CLS token in the vision tower, and {adapter.name}'s tower has none"
        if Stage.VISION_ENCODER in self.stage:
            reason = adapter.tower_unsupported_reason()
            return None if reason is None else f"acts inside the vision tower ({reason})"
        return None

    # -- validation against a model (before anything is touched) ---------------------------------------------
    def validate(self, adapter: ModelAdapter) -> None:
        """Raise ``ConfigError``/``NotSupportedError`` if the method cannot run on this model as configured."""
        reason = self.unsupported_reason(adapter)
        if reason is not None:
            raise NotSupportedError(f"method {self.name!r} {reason}")
        n_tokens = adapter.tokens_per_image()
        if isinstance(self.budget, int) and n_tokens is not None and self.budget > n_tokens:
            raise ConfigError(
                f"budget={self.budget} asks for more visual tokens than an image has: "
                f"{adapter.name} produces {n_tokens} per image, so an int budget must be in [1, {n_tokens}]"
            )
        n_tile = adapter.tokens_per_tile() if n_tokens is None else None
        if isinstance(self.budget, int) and n_tile is not None and self.budget > n_tile:
            raise ConfigError(
                f"budget={self.budget} asks for more visual tokens than a tile has: an int budget is the tokens "
                f"kept per tile on {adapter.name}, whose tiles have {n_tile}, so it must be in [1, {n_tile}]"
            )
        vision_scores = self.needs.cls_token or self.needs.vision_keys or self.needs.vision_reader_qk
        substitute = vision_scores and not adapter.has_cls_token() and adapter.scores_without_cls()
        if substitute and "flash" in adapter.attn_implementation("vision"):  # a setting, not the family
            raise NotSupportedError(
                f"method {self.name!r} reads the vision tower's attention per image, and {adapter.name}'s tower "
                "packs all images into one FlashAttention call; use sdpa or eager attention in the vision tower"
            )
        if Stage.VISION_ENCODER in self.stage:  # the plan raises ConfigError when the budget cannot be met
            n_blocks = adapter.feature_block() + 1  # raises NotSupportedError on towers that cannot reduce
            height, width = adapter.patch_grid()
            cls_token = adapter.has_cls_token()
            self.tower_plan(n_blocks, height * width + int(cls_token), cls_token)

    def describe(self) -> dict[str, object]:
        """Hyper-parameters as a plain dict (for configs and results)."""
        return {"method": self.name, **{f.name: getattr(self, f.name) for f in fields(self)}}

    # -- stage hooks -----------------------------------------------------------------------------------------
    def reduce_visual(self, tokens: VisualTokens) -> VisualReduction:
        raise NotImplementedError(f"{type(self).__name__} does not act at VISUAL_OUTPUT")

    def prune_layers(self, n_layers: int) -> tuple[int, ...]:
        """Language-model layers at whose input this method prunes (in-LLM methods)."""
        return ()

    def prune_layer(self, tokens: LayerTokens) -> torch.Tensor | list[torch.Tensor] | LayerReduction:
        """The kept tokens: a (B, L) bool mask (preferred: the engine then does no per-row work), or kept positions
        per row, each (L'_b,) sorted. Text tokens must be kept unless the method merges them. A method that
        inserts merged tokens returns a :class:`LayerReduction`."""
        raise NotImplementedError(f"{type(self).__name__} does not act at LLM_PREFILL")

    def tower_plan(self, n_blocks: int, n_tokens: int, cls_token: bool) -> dict[int, int]:
        """``VISION_ENCODER`` methods: {block: tokens leaving it} for the blocks this method reduces at.

        ``n_blocks`` blocks (0 .. n_blocks - 1) feed the visual features; ``n_tokens`` enter block 0 (the CLS
        token included when ``cls_token``). An empty plan changes nothing. Raises ``ConfigError`` when the
        budget cannot be met on this tower.
        """
        return {}

    def reduce_block(self, tokens: BlockTokens, n_out: int) -> BlockReduction:
        """Reduce a block's tokens to exactly ``n_out`` (CLS, when present, stays first)."""
        raise NotImplementedError(f"{type(self).__name__} does not act at VISION_ENCODER")

    def size_bias(self) -> bool:
        """Whether the tower's attention adds log(size) of each key to its logits once tokens were merged."""
        return False

    def select_queries(self, tokens: LayerTokens) -> torch.Tensor:
        """``needs.llm_query_tokens`` methods: (B, L) bool, the tokens of the sequence entering layer 0 whose
        attention rows every pruning layer needs. Called once per prefill; the engine follows these tokens
        through pruning and hands their rows (``query_rows``, -1 padded) to :meth:`prune_layer`."""
        raise NotImplementedError(f"{type(self).__name__} does not select query tokens")

    def attention_queries(self, visual_index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Query positions whose attention rows the method needs: (B, R). Default: the last real token."""
        positions = torch.arange(valid.shape[1], device=valid.device).expand_as(valid)
        return torch.where(valid, positions, -1).amax(dim=1, keepdim=True)


class ScorePruner(TokenMethod):
    """A method that scores visual tokens and keeps the top ``budget`` of each image in original order.

    Pre-LLM subclasses implement ``score_visual(tokens) -> (I, P)``; in-LLM subclasses implement
    ``score_layer(tokens) -> (B, L)`` over the whole sequence (only visual positions are read).
    """

    def score_visual(self, tokens: VisualTokens) -> torch.Tensor:
        raise NotImplementedError

    def score_layer(self, tokens: LayerTokens) -> torch.Tensor:
        raise NotImplementedError

    def reduce_visual(self, tokens: VisualTokens) -> VisualReduction:
        keep = topk_keep(self.score_visual(tokens), self.keep_count(tokens.n_tokens))  # (I, k)
        return VisualReduction.select(tokens, keep)

    def prune_layer(self, tokens: LayerTokens) -> torch.Tensor:
        """(B, L) bool: every non-visual token, and the top ``keep_count(n)`` of each image's n visual tokens."""
        scores = self.score_layer(tokens)  # (B, L)
        counts = image_counts(tokens.visual_index, tokens.entry_counts)  # (B, G) visual tokens of each image
        return topk_mask_in_groups(scores, tokens.visual_index, self.keep_counts(counts))


def image_counts(visual_index: torch.Tensor, entry_counts: torch.Tensor | None = None) -> torch.Tensor:
    """Visual tokens of each image in each row: visual_index (B, L) -> (B, G) long.

    G is ``entry_counts.shape[1]`` (the images of the busiest row entering the language model) when given, else
    read from ``visual_index`` (one host read).
    """
    n_images = entry_counts.shape[1] if entry_counts is not None else int(visual_index.max()) + 1
    counts = visual_index.new_zeros(visual_index.shape[0], max(n_images, 1))
    return counts.scatter_add_(1, visual_index.clamp(min=0), (visual_index >= 0).long())


def check_positions(method: TokenMethod, value: str) -> None:
    if value not in ("original", "contiguous"):
        raise ConfigError(f"{method.name}: positions={value!r} is not allowed; use 'original' or 'contiguous'")


def check_not_supported(condition: bool, message: str) -> None:
    if condition:
        raise NotSupportedError(message)
