"""In-tower reduction: merge or drop visual tokens inside the vision tower's blocks, between attention and MLP.

A pre-norm vision block computes ``h = x + attention(norm1(x)); out = h + mlp(pre_mlp_norm(h))``. A method
such as ToMe or EViT reduces ``h`` to fewer tokens before the MLP, which a pre-hook on the block cannot do
(the block keeps its own residual). The block's own code still runs, steered by removable hooks on its
sub-modules (all in the session's HookSet, so nothing is left on the model after exit):

1. The attention-function probe (the tower's attention implementation is ``mmaccel_<impl>`` for the session,
   which calls the model's own kernel) records the block's head-mean keys and/or CLS-row attention from the
   block's own queries and keys, as the method's ``needs`` ask.
2. A forward pre-hook on ``pre_mlp_norm`` receives h (I, N, D), calls ``method.reduce_block`` and hands the
   reduced h' (I, N', D) to the norm, so the MLP runs on N' tokens.
3. A forward hook on ``mlp`` stores ``h' + mlp(norm(h'))``, the block's residual sum over the reduced tokens,
   and returns a zero scalar, so that the block's own residual add (over the N unreduced tokens) still
   broadcasts; its result is discarded.
4. A forward hook on the block, prepended so that it runs before transformers' output-capturing hooks,
   replaces the block's output by the stored (I, N', D) sum. The hidden states the model reads as visual
   features are therefore the reduced ones, and later blocks run on N' tokens.

Proportional attention (ToMe): once tokens were merged, a forward pre-hook on each later block's attention
module adds ``log(size)`` of every key to ``attention_mask`` as an additive float mask (I, 1, 1, N), which the
SDPA and eager kernels apply; the kernel is unchanged.

A forward pre-hook on block 0 starts a fresh record for every tower call. At the projector input (LLaVA-1.5)
the record becomes one :class:`~mmaccel.engine.units.ReducedRun` per image (representative source patch of
every output token, the output token every patch went into, token sizes), which the visual stage consumes
exactly like a pre-LLM reduction: each image's placeholder run shrinks to the tower's output count.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mmaccel.engine.captures import install_probes
from mmaccel.engine.hooks import HookSet
from mmaccel.engine.units import ReducedRun
from mmaccel.engine.visual import EncoderCall, VisualStage
from mmaccel.errors import NotSupportedError
from mmaccel.methods.base import BlockTokens
from mmaccel.ops.attention import attention_rows

if TYPE_CHECKING:
    from mmaccel.methods.base import TokenMethod
    from mmaccel.models.base import ModelAdapter


@dataclass
class _TowerRun:
    """State of one call of the vision tower (I images)."""

    sizes: torch.Tensor  # (I, N, 1) float32: original tokens each current token stands for
    origin: torch.Tensor  # (I, N) long: original tower token each current token continues, -1 for a new one
    groups: torch.Tensor  # (I, N0) long: current token each original token is part of, -1 when dropped
    merged: bool = False  # whether any block has reduced yet
    capture: dict[str, torch.Tensor] = field(default_factory=dict)
    reduced: torch.Tensor | None = None  # (I, N', D) h' of the block being run
    output: torch.Tensor | None = None  # (I, N', D) the block's output over the reduced tokens


class TowerStage(VisualStage):
    """Realises a ``VISION_ENCODER`` method on a model; hands its result on like a pre-LLM reduction."""

    stage_name = "vision_encoder"

    def __init__(self, method: TokenMethod, adapter: ModelAdapter) -> None:
        super().__init__(method, adapter)
        self.reduces = True
        if self.site != "projector_input":
            raise NotSupportedError(f"methods inside the vision tower are not supported on {adapter.name} models")
        self.n_blocks = len(adapter.vision_blocks())
        self.n_feeding = adapter.feature_block() + 1  # blocks whose output reaches the visual features
        self.cls_token = adapter.has_cls_token()
        height, width = adapter.patch_grid()
        self.n_tokens = height * width + int(self.cls_token)  # tokens entering block 0
        self.plan = method.tower_plan(self.n_feeding, self.n_tokens, self.cls_token)
        self.tower_tokens = [self.n_tokens]  # tokens entering each block, then leaving the tower
        for block in range(self.n_blocks):
            self.tower_tokens.append(self.plan.get(block, self.tower_tokens[-1]))
        grows = any(after > before for before, after in itertools.pairwise(self.tower_tokens))
        if grows or any(not 0 <= block < self.n_feeding for block in self.plan):
            raise RuntimeError(f"{method.name}.tower_plan returned an inconsistent plan {self.plan}")
        # features handed on: without CLS unless the model keeps it (LLaVA's "full" select strategy)
        self.shift = 1 if self.cls_token and not adapter.cls_in_features() else 0
        self._run: _TowerRun | None = None

    # -- installation ------------------------------------------------------------------------------------------
    def install(self, hooks: HookSet) -> None:
        super().install(hooks)  # the encoder calls, and the projector-input site where the result is handed on
        if not self.plan:
            return
        blocks = self.adapter.vision_blocks()
        needs = self.method.needs
        probing = needs.vision_keys or needs.vision_cls_attention
        hooks.forward_pre_hook(blocks[0], self._start_run, with_kwargs=True)
        probes = []
        for block in sorted(self.plan):
            parts = self.adapter.vision_block_parts(block)
            if probing:
                probes.append((parts.attention, self._probe))
            hooks.forward_pre_hook(parts.pre_mlp_norm, self._make_reduce(block))
            hooks.forward_hook(parts.mlp, self._after_mlp)
            hooks.forward_hook(blocks[block], self._block_output)
        install_probes(hooks, self.adapter, probes)
        if self.method.size_bias():
            for block in range(min(self.plan) + 1, self.n_blocks):
                parts = self.adapter.vision_block_parts(block)
                hooks.forward_pre_hook(parts.attention, self._add_size_bias, with_kwargs=True)

    # -- inside the tower ----------------------------------------------------------------------------------------
    def _start_run(self, module, args, kwargs) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]  # (I, N0, D)
        n_images, n_tokens = hidden.shape[:2]
        if n_tokens != self.n_tokens:
            raise NotSupportedError(
                f"{self.method.name}: the vision tower received {n_tokens} tokens per image, expected "
                f"{self.n_tokens}; images must have the model's configured size"
            )
        device = hidden.device
        positions = torch.arange(n_tokens, device=device).expand(n_images, -1)
        self._run = _TowerRun(
            sizes=torch.ones(n_images, n_tokens, 1, device=device),
            origin=positions.clone(),
            groups=positions.clone(),
        )

    def _probe(self, module, query, key, mask, scaling) -> None:
        # query, key: (I, H, N, d), CLS (if any) at 0
        if self._run is None:
            return
        if self.method.needs.vision_keys:
            self._run.capture["keys"] = key.mean(dim=1)  # (I, N, d)
        if self.method.needs.vision_cls_attention:
            rows = torch.zeros(query.shape[0], 1, dtype=torch.long, device=query.device)
            self._run.capture["cls_attention"] = attention_rows(query, key, rows, scaling, mask, causal=False)[
                :, :, 0
            ]  # (I, H, N)

    def _add_size_bias(self, module, args, kwargs: dict[str, Any]):
        run = self._run
        if run is None or not run.merged:
            return None
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]  # (I, N, D)
        bias = run.sizes.log().to(hidden.dtype)[:, None, None, :, 0]  # (I, 1, 1, N)
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=hidden.dtype, device=mask.device).masked_fill(
                ~mask, torch.finfo(hidden.dtype).min
            )
        kwargs["attention_mask"] = bias if mask is None else mask + bias
        return args, kwargs

    def _make_reduce(self, block: int):
        n_out = self.plan[block]

        def reduce(module, args):
            run = self._run
            if run is None:
                raise RuntimeError("a vision block ran outside a tower call")
            hidden = args[0]  # (I, N, D)
            capture, run.capture = run.capture, {}
            tokens = BlockTokens(
                layer=block,
                hidden=hidden,
                sizes=run.sizes,
                cls_token=self.cls_token,
                keys=capture.get("keys"),
                cls_attention=capture.get("cls_attention"),
            )
            out = self.method.reduce_block(tokens, n_out)
            n_images, n_tokens = hidden.shape[:2]
            if (
                out.hidden.shape != (n_images, n_out, hidden.shape[-1])
                or out.sizes.shape != (n_images, n_out, 1)
                or out.index.shape != (n_images, n_tokens)
                or out.source.shape != (n_images, n_out)
            ):
                raise RuntimeError(f"{self.method.name}.reduce_block returned inconsistent shapes at block {block}")
            run.sizes = out.sizes.float()
            run.origin = torch.where(out.source >= 0, run.origin.gather(1, out.source.clamp(min=0)), -1)
            run.groups = torch.where(run.groups >= 0, out.index.gather(1, run.groups.clamp(min=0)), -1)
            run.merged = True
            run.reduced = out.hidden
            return (out.hidden, *args[1:])

        return reduce

    def _after_mlp(self, module, args, output: torch.Tensor) -> torch.Tensor:
        run = self._run
        assert run is not None and run.reduced is not None
        run.output = run.reduced + output  # (I, N', D): the block's residual sum over the reduced tokens
        run.reduced = None
        return output.new_zeros(())  # the block adds it to its N-token residual; that result is replaced

    def _block_output(self, module, args, output):
        run = self._run
        assert run is not None and run.output is not None
        hidden, run.output = run.output, None
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    # -- at the projector input ------------------------------------------------------------------------------------
    def _site_reduce(self, features: torch.Tensor, call: EncoderCall):
        """The tower's result for the (I, n, Dv) projector input: (runs, None), or (None, None) when unreduced."""
        run, self._run = self._run, None
        n_images, n_features = features.shape[:2]
        if run is None or not run.merged:
            return None, None
        n_out = run.origin.shape[1] - self.shift
        if n_features != n_out or run.origin.shape[0] != n_images:
            raise NotSupportedError(
                f"{self.method.name}: the projector received {n_features} tokens per image but the tower "
                f"produced {n_out}; vision features must be one block's output"
            )
        first_patch = int(self.cls_token)
        origin = run.origin[:, self.shift :]  # (I, n_out) original tower token of each feature
        sources = torch.where(origin >= first_patch, origin - self.shift, -1)
        groups = run.groups[:, self.shift :]  # (I, counts_in)
        groups = torch.where(groups >= 0, groups - self.shift, -1)
        n_in = self.n_tokens - self.shift
        sizes = run.sizes[:, self.shift :, 0]  # (I, n_out)
        runs = [
            ReducedRun(
                features=None,
                sources=row_sources,
                groups=row_groups,
                labels=torch.zeros(n_out, dtype=torch.long, device=features.device),
                visual_in=n_in,
                visual_out=n_out,
                sizes=row_sizes,
            )
            for row_sources, row_groups, row_sizes in zip(sources, groups, sizes)
        ]
        return runs, None
