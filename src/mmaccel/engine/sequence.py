"""Sequence bookkeeping: where each image's tokens are, and rebuilding a shorter prompt after pre-LLM reduction."""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

import torch

from mmaccel.errors import ConfigError


@dataclass
class VisualLayout:
    """Where the visual items (images, videos) of a batch are.

    ``index`` (B, N) long: item number within its row for visual tokens, -1 for text and padding. ``items``: one
    (placeholder token id, number within that token id's list) per item in (batch, sequence) order, and
    ``counts`` its placeholder tokens; ``rows``: the row of each item.
    """

    index: torch.Tensor
    items: list[tuple[int, int]]
    counts: list[int]
    rows: list[int]


def visual_layout(
    input_ids: torch.Tensor, counts_by_token: dict[int, list[int]], names: dict[int, str] | None = None
) -> VisualLayout:
    """Split the placeholder runs of ``input_ids`` (B, N) into items.

    ``counts_by_token[t]``: placeholder tokens of each item of placeholder id t, in (batch, sequence) order, the
    order in which the model consumes that modality's features. Adjacent items are split by their counts, never
    by fixed offsets. ``names`` (token id -> "image", "video") words the errors; "image" by default.
    Vectorised over the batch: one host read per placeholder id, whatever the batch size.
    """
    names = names or {}
    width = input_ids.shape[1]
    flat_ids = input_ids.flatten()
    index = torch.full_like(flat_ids, -1)
    starts, ends, item_counts, keys = [], [], [], []
    for token, token_counts in counts_by_token.items():
        name = names.get(token, "image")
        where = torch.nonzero(flat_ids == token).flatten()  # (n,) row-major: (batch, sequence) order
        bounds = list(itertools.accumulate(token_counts, initial=0))  # (items + 1,) python ints: no host read
        n_placeholders = where.numel()
        fits = bisect.bisect_right(bounds, n_placeholders) - 1  # items with enough placeholders left for them
        lower = torch.tensor(bounds[:fits], device=where.device, dtype=torch.long)
        upper = torch.tensor(bounds[1 : fits + 1], device=where.device, dtype=torch.long)
        first, last = where[lower], where[upper - 1]  # (fits,) flat positions of each item's ends
        split = (last - first + 1 != upper - lower) | (first // width != last // width)
        if fits and bool(split.any()):
            row = int(first[split.nonzero()[0, 0]]) // width
            raise ConfigError(
                f"row {row}: {name} placeholder tokens do not split into whole {name}s of {token_counts} tokens"
            )
        if n_placeholders > bounds[-1]:
            row = int(where[bounds[-1]]) // width
            raise ConfigError(
                f"row {row} has more {name} placeholder tokens than the {len(token_counts)} {name}(s) provide "
                "features for"
            )
        if fits < len(token_counts):
            raise ConfigError(f"{len(token_counts)} {name}(s) were given but the prompts hold placeholders for {fits}")
        if not token_counts:
            continue
        starts.append(first)
        item_counts += token_counts
        keys += [(token, k) for k in range(len(token_counts))]
        ends.append(where)
    if not keys:
        return VisualLayout(index=index.view_as(input_ids), items=[], counts=[], rows=[])
    first = torch.cat(starts)  # (G,) in token-id order
    order = torch.argsort(first)  # (batch, sequence) order of the items
    first_sorted = first[order]
    row_of = first_sorted // width  # (G,)
    new_row = torch.ones_like(row_of, dtype=torch.bool)
    new_row[1:] = row_of[1:] != row_of[:-1]
    group_start = torch.cummax(torch.where(new_row, torch.arange(len(row_of), device=row_of.device), 0), 0).values
    local = torch.arange(len(row_of), device=row_of.device) - group_start  # item number within its row
    counts_sorted = torch.tensor(item_counts, device=first.device)[order]
    offsets = torch.arange(sum(item_counts), device=first.device) - torch.repeat_interleave(
        torch.cumsum(counts_sorted, 0) - counts_sorted, counts_sorted
    )
    positions = torch.repeat_interleave(first_sorted, counts_sorted) + offsets  # every placeholder, item by item
    index[positions] = torch.repeat_interleave(local, counts_sorted)
    order_list, rows = torch.stack([order, row_of]).tolist()  # one host read for the batch
    return VisualLayout(
        index=index.view_as(input_ids),
        items=[keys[g] for g in order_list],
        counts=[item_counts[g] for g in order_list],
        rows=rows,
    )


def visual_index(input_ids: torch.Tensor, image_token_id: int, counts: list[int]) -> torch.Tensor:
    """Which image each token belongs to, numbered within its row (-1 for text and padding).

    input_ids: (B, N); counts: placeholder tokens per image in (batch, sequence) order, the order in which the
    model consumes image features. Adjacent images are split by their counts, never by fixed offsets.
    Returns (B, N) long.
    """
    return visual_layout(input_ids, {image_token_id: counts}).index


def images_per_row(index: torch.Tensor) -> list[int]:
    return [int(row.max().item()) + 1 if (row >= 0).any() else 0 for row in index]


def pack_left(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pack the True entries of each row of ``keep`` (B, N) bool: (B, N') their positions in the row, in
    order (0 in padding slots), and (B, N') validity; N' is the longest row. One host read for the batch."""
    lengths = keep.sum(dim=1)  # (B,)
    length = int(lengths.max()) if keep.shape[0] else 0
    column = (length - lengths)[:, None] + keep.long().cumsum(dim=1) - 1  # (B, N) packed column of a kept token
    rows, positions = torch.nonzero(keep, as_tuple=True)
    packed = torch.zeros(keep.shape[0], length, dtype=torch.long, device=keep.device)
    valid = torch.zeros(keep.shape[0], length, dtype=torch.bool, device=keep.device)
    packed[rows, column[rows, positions]] = positions
    valid[rows, column[rows, positions]] = True
    return packed, valid


@dataclass
class RebuiltPrompt:
    input_ids: torch.Tensor  # (B, N')
    attention_mask: torch.Tensor  # (B, N')
    position_ids: torch.Tensor  # (B, N') or (R, B, N') as given
    shift: torch.Tensor  # (B,) original minus new position of each row's last token (decode continues from it)
    keep: torch.Tensor  # (B, N') position in the original row of each kept token (0 in padding slots)


def take_tokens(x: torch.Tensor, keep: torch.Tensor, valid: torch.Tensor, fill: int = 0) -> torch.Tensor:
    """Gather (..., B, N) per-token values at ``keep`` (B, N') along the last dim; ``fill`` where not ``valid``."""
    index = keep.expand(*x.shape[:-2], *keep.shape)
    return x.gather(-1, index).masked_fill(~valid.bool(), fill)


def rebuild_prompt(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    token_ids: int | tuple[int, ...],
    counts_in: list[int],
    counts_out: list[int],
    sources: list[torch.Tensor],
    positions: str,
    pad_token_id: int,
) -> RebuiltPrompt:
    """Shrink each visual item's placeholder run from ``counts_in`` to ``counts_out`` tokens; left re-pad the rows.

    input_ids, attention_mask: (B, N); position_ids: (B, N), or (R, B, N) for multi-row positions (M-RoPE rows
    t, h, w); items are the runs of the placeholder ids ``token_ids`` in (batch, sequence) order.
    ``sources[g]`` (counts_out[g],): the original visual token (index within item g) each kept feature stands for,
    -1 for a token that is not a patch (it then takes the position of the item's first placeholder).
    ``positions="original"`` gives each kept token every position row of its source and leaves the text where it
    was; ``"contiguous"`` renumbers the rebuilt prompt from its attention mask (the same on every row).
    """
    token_ids = (token_ids,) if isinstance(token_ids, int) else tuple(token_ids)
    device = input_ids.device
    batch, width = input_ids.shape
    multi_row = position_ids.dim() == 3
    pos = position_ids if multi_row else position_ids[None]  # (R, B, N)
    flat_pos = pos.flatten(1)  # (R, B * N)
    is_placeholder = torch.isin(input_ids, torch.tensor(token_ids, device=device)).flatten()
    placeholders = torch.nonzero(is_placeholder).flatten()  # (P,) flat: the items' runs in (batch, sequence) order
    counts_in_t = torch.tensor(counts_in, dtype=torch.long, device=device)
    counts_out_t = torch.tensor(counts_out, dtype=torch.long, device=device)
    starts = torch.cumsum(counts_in_t, 0) - counts_in_t  # (G,) index in ``placeholders`` of each item's first
    offset = torch.arange(placeholders.numel(), device=device) - torch.repeat_interleave(starts, counts_in_t)
    kept_slot = offset < torch.repeat_interleave(counts_out_t, counts_in_t)  # the first counts_out slots
    keep = torch.ones(batch * width, dtype=torch.bool, device=device)
    keep[placeholders[~kept_slot]] = False
    # kept slot k of item g takes every position row of the item's placeholder sources[g][k] (-1: its first)
    source = torch.cat([s.to(device) for s in sources]).clamp(min=0) if sources else offset[:0]  # (sum out,)
    source_flat = placeholders[torch.repeat_interleave(starts, counts_out_t) + source]
    new_pos = flat_pos.clone()
    new_pos[:, placeholders[kept_slot]] = flat_pos[:, source_flat]
    kept, valid = pack_left(keep.view(batch, width))  # (B, N'), (B, N')
    row_mask = take_tokens(attention_mask, kept, valid, 0)  # (B, N')
    if positions == "original":
        packed_pos = take_tokens(new_pos.view(-1, batch, width), kept, valid, 0)  # (R, B, N')
    else:
        packed_pos = (row_mask.long().cumsum(-1) - 1).clamp(min=0).expand(pos.shape[0], -1, -1)
    shift = last_position(pos, attention_mask) - last_position(packed_pos, row_mask)  # (B,)
    return RebuiltPrompt(
        input_ids=take_tokens(input_ids, kept, valid, pad_token_id),
        attention_mask=row_mask,
        position_ids=packed_pos if multi_row else packed_pos[0],
        shift=shift,
        keep=kept,
    )


def last_position(pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) the largest value over the rows of (R, B, N) ``pos`` at each row's last real token (0 for none)."""
    columns = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(mask.bool(), columns, -1).amax(dim=1)  # (B,)
    index = last.clamp(min=0)[None, :, None].expand(pos.shape[0], -1, 1)  # (R, B, 1)
    at = pos.gather(2, index)[..., 0].amax(dim=0)  # (B,)
    return torch.where(last >= 0, at, torch.zeros_like(at))
