"""Attention guidance: an auxiliary stage-2 loss on a few attention heads, for the lookups and the option step.

Answering ``A. red  B. blue ...`` with a letter takes an induction-like circuit: each option's text must gather its
letter, then the answer position must attend to the option that matches what it looked up and copy that letter.
Trained only through the letter's cross-entropy, this circuit forms too slowly for the CPU budget (trained that way,
the model stays near chance on multiple choice). Likewise every lookup starts from attention spread over all 64
image tokens, so the answer's gradient reaches the right patches only weakly. The guidance loss supervises the
attention patterns directly, with targets known from the scene:

* **binding** (``binding_layer``, head 0): every token of option ``i``'s text attends to option ``i``'s letter;
* **focus** (``focus_layer``, head ``focus_head``): the positions that predict the answer attend to the image tokens
  the question points at (:attr:`~mmaccel.toy.questions.Question.focus`: the object named, the anchor of a
  relation, or the sign);
* **choice** (``choice_layer``, head 0): the position that predicts the answer letter attends to the text of the
  correct option;
* **content**: a throw-away linear probe on the choice layer's input at that position reads the correct option's
  distinctive tokens (``red`` of ``the red object``), so that the answer is worked out before the choice head
  looks for it;
* **flag** (off by default): a throw-away linear probe on the choice layer's input reads which option is the correct
  one (a cross-entropy over the options of each turn, on the mean of the probe over each option's text).

The attention terms are ``-log`` of the attention mass the head puts on its target positions, averaged over queries,
computed from the layer's own post-RoPE queries and keys under the batch's 4-D mask. Only training sees them: the
checkpoint is a plain LLaVA whose heads happen to attend that way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mmaccel.toy.training.data import PackedBatch


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on ``[..., head_dim]`` with ``cos``/``sin`` broadcast to it (Llama's rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


@dataclass
class GuideQueries:
    """Queries of one guided head: rows ``[N]``, query positions ``[N]`` and target masks ``[N, L]``."""

    rows: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def build(cls, entries: list[tuple[int, int, tuple[int, ...]]], length: int) -> GuideQueries | None:
        if not entries:
            return None
        targets = torch.zeros(len(entries), length, dtype=torch.bool)
        for index, (_, _, positions) in enumerate(entries):
            targets[index, list(positions)] = True
        return cls(torch.tensor([row for row, _, _ in entries]), torch.tensor([pos for _, pos, _ in entries]), targets)


def binding_queries(batch: PackedBatch) -> GuideQueries | None:
    """Every option-text token, with its option's letter as target."""
    entries = [
        (turn.row, position, (letter,))
        for turn in batch.options
        for letter, content in zip(turn.letters, turn.contents, strict=True)
        for position in content
    ]
    return GuideQueries.build(entries, batch.input_ids.shape[1])


def focus_queries(batch: PackedBatch) -> GuideQueries | None:
    """Every answer-predicting position of a turn with a focus, with the focus's image tokens as targets."""
    entries = [(turn.row, query, turn.targets) for turn in batch.focus for query in turn.queries]
    return GuideQueries.build(entries, batch.input_ids.shape[1])


def choice_queries(batch: PackedBatch) -> GuideQueries | None:
    """The answer-letter position of every option turn, with the correct option's text as target."""
    entries = [(turn.row, turn.query, turn.contents[turn.correct]) for turn in batch.options]
    return GuideQueries.build(entries, batch.input_ids.shape[1])


class HeadCapture:
    """Records the inputs of a Llama attention module (hidden states and RoPE tables) during one forward."""

    def __init__(self, attention: nn.Module):
        self.attention = attention
        self.inputs: dict | None = None
        self._handle = attention.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.inputs = {"hidden": kwargs["hidden_states"], "rope": kwargs["position_embeddings"]}

    def remove(self) -> None:
        self._handle.remove()

    def loss(self, queries: GuideQueries, mask: torch.Tensor, head: int = 0) -> torch.Tensor:
        """``-log`` attention mass on the targets for ``head``, averaged over queries; ``mask`` ``[B, 1, L, L]``."""
        attention = self.attention
        hidden = self.inputs["hidden"]  # [B, L, D]
        cos, sin = self.inputs["rope"]  # [B, L, hd] each
        head_dim = attention.head_dim
        window = slice(head * head_dim, (head + 1) * head_dim)
        kv_head = head // attention.num_key_value_groups
        kv_window = slice(kv_head * head_dim, (kv_head + 1) * head_dim)
        q_weight, k_weight = attention.q_proj.weight[window], attention.k_proj.weight[kv_window]  # [hd, D] each
        q_bias = attention.q_proj.bias[window] if attention.q_proj.bias is not None else None
        k_bias = attention.k_proj.bias[kv_window] if attention.k_proj.bias is not None else None
        rows, positions = queries.rows, queries.positions
        query = nn.functional.linear(hidden[rows, positions], q_weight, q_bias)  # [N, hd]
        query = _rotate(query, cos[rows, positions], sin[rows, positions])
        keys = nn.functional.linear(hidden, k_weight, k_bias)  # [B, L, hd]
        keys = _rotate(keys, cos, sin)[rows]  # [N, L, hd]
        scores = torch.einsum("nd,nld->nl", query, keys) / math.sqrt(head_dim)  # [N, L]
        allowed = mask[rows, 0, positions]  # [N, L]
        scores = scores.float().masked_fill(~allowed, float("-inf"))
        log_probs = scores.log_softmax(-1)
        on_target = log_probs.masked_fill(~(queries.targets & allowed), float("-inf")).logsumexp(-1)  # [N]
        return -on_target.mean()


def flag_loss(probe: nn.Linear, hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor | None:
    """Cross-entropy of the correct option from ``probe``, averaged over its tokens; ``hidden`` ``[B, L, D]``."""
    losses = []
    for turn in batch.options:
        scores = torch.stack([probe(hidden[turn.row, list(content)]).mean() for content in turn.contents])  # [n]
        losses.append(nn.functional.cross_entropy(scores[None], torch.tensor([turn.correct])))
    return torch.stack(losses).mean() if losses else None


def content_targets(batch: PackedBatch) -> list[tuple[int, int, list[int]]]:
    """``(row, query, token ids)`` per option turn: the tokens of the correct option's text that not every option
    shares (``red`` of ``the red object``); turns whose correct option has none are left out."""
    targets = []
    for turn in batch.options:
        ids = [set(batch.input_ids[turn.row, list(content)].tolist()) for content in turn.contents]
        distinctive = sorted(ids[turn.correct] - set.intersection(*ids))
        if distinctive:
            targets.append((turn.row, turn.query, distinctive))
    return targets


def content_loss(probe: nn.Linear, hidden: torch.Tensor, batch: PackedBatch) -> torch.Tensor | None:
    """Cross-entropy of :func:`content_targets` (spread evenly over each turn's tokens) from ``probe`` at the
    queries; ``hidden`` ``[B, L, D]`` is the choice layer's input."""
    entries = content_targets(batch)
    if not entries:
        return None
    targets = torch.zeros(len(entries), probe.out_features)  # [N, V]
    for index, (_, _, tokens) in enumerate(entries):
        targets[index, tokens] = 1.0 / len(tokens)
    rows = torch.tensor([row for row, _, _ in entries])
    queries = torch.tensor([query for _, query, _ in entries])
    logits = probe(hidden[rows, queries])  # [N, V]
    return -(targets * logits.log_softmax(-1)).sum(-1).mean()


class OptionGuidance:
    """The binding, choice, focus and flag terms on a Llama decoder (see the module docstring); a context manager.

    ``parameters()`` are the flag probe's, to be trained with the model. ``focus`` weighs the focus term against the
    option terms (0 leaves it out).
    """

    def __init__(
        self,
        language_model: nn.Module,
        binding_layer: int = 0,
        choice_layer: int = -1,
        flag: bool = False,
        focus: float = 1.0,
        focus_layer: int = 1,
        focus_head: int = 1,
        content: bool = True,
    ):
        layers = language_model.layers
        self.binding = HeadCapture(layers[binding_layer].self_attn)
        self.choice = HeadCapture(layers[choice_layer].self_attn)
        self.focus = HeadCapture(layers[focus_layer].self_attn) if focus > 0 else None
        self.focus_weight, self.focus_head = focus, focus_head
        self.flag = nn.Linear(language_model.config.hidden_size, 1) if flag else None
        config = language_model.config
        self.content = nn.Linear(config.hidden_size, config.vocab_size) if content else None
        self.last_values: dict[str, float] = {}

    def parameters(self) -> list[nn.Parameter]:
        probes = [probe for probe in (self.flag, self.content) if probe is not None]
        return [param for probe in probes for param in probe.parameters()]

    def __enter__(self) -> OptionGuidance:
        return self

    def __exit__(self, *exc) -> None:
        self.binding.remove()
        self.choice.remove()
        if self.focus is not None:
            self.focus.remove()

    def loss(self, batch: PackedBatch, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted sum of the terms for the last forward on ``batch`` and each term's value (0 without targets)."""
        total = torch.zeros(())
        values = {}
        for name, capture, queries in (
            ("binding", self.binding, binding_queries(batch)),
            ("choice", self.choice, choice_queries(batch)),
        ):
            if queries is None or capture.inputs is None:
                values[name] = 0.0
                continue
            term = capture.loss(queries, mask)
            values[name] = float(term.detach())
            total = total + term
        queries = focus_queries(batch)
        if self.focus is not None and queries is not None and self.focus.inputs is not None:
            term = self.focus.loss(queries, mask, head=self.focus_head)
            values["focus"] = float(term.detach())
            total = total + self.focus_weight * term
        if self.flag is not None and self.choice.inputs is not None:
            term = flag_loss(self.flag, self.choice.inputs["hidden"], batch)
            if term is not None:
                values["flag"] = float(term.detach())
                total = total + term
        if self.content is not None and self.choice.inputs is not None:
            term = content_loss(self.content, self.choice.inputs["hidden"], batch)
            if term is not None:
                values["content"] = float(term.detach())
                total = total + term
        self.last_values = values
        return total, values
