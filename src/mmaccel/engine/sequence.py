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


def pack_left(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad per-row index lists into one tensor: (B, L') indices (0 in padding slots) and (B, L') validity."""
    length = max(row.numel() for row in rows)
    device = rows[0].device
    packed = torch.zeros(len(rows), length, dtype=torch.long, device=device)
    valid = torch.zeros(len(rows), length, dtype=torch.bool, device=device)
    for b, row in enumerate(rows):
        packed[b, length - row.numel() :] = row
        valid[b, length - row.numel() :] = True
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
    placeholder_ids = torch.tensor(token_ids, device=input_ids.device)
    multi_row = position_ids.dim() == 3
    rows_keep, rows_pos, shifts = [], [], []
    item = 0
    for row in range(input_ids.shape[0]):
        ids, mask = input_ids[row], attention_mask[row]
        pos = position_ids[:, row] if multi_row else position_ids[row][None]  # (R, N)
        placeholders = torch.nonzero(torch.isin(ids, placeholder_ids)).flatten()
        keep = torch.ones_like(ids, dtype=torch.bool)
        new_pos = pos.clone()
        offset = 0
        while offset < placeholders.numel():
            span = placeholders[offset : offset + counts_in[item]]  # (n_in,)
            n_out = counts_out[item]
            keep[span[n_out:]] = False
            source = sources[item].to(span.device)
            new_pos[:, span[:n_out]] = pos[:, span[source.clamp(min=0)]]
            offset += counts_in[item]
            item += 1
        kept = torch.nonzero(keep).flatten()
        row_mask = mask[kept]
        if positions == "original":
            row_pos = new_pos[:, kept]
        else:
            row_pos = (row_mask.long().cumsum(0) - 1).clamp(min=0).expand(pos.shape[0], -1)
        real = torch.nonzero(mask).flatten()
        last_old = pos[:, real[-1]].amax() if real.numel() else pos.new_tensor(0)
        real_new = torch.nonzero(row_mask).flatten()
        last_new = row_pos[:, real_new[-1]].amax() if real_new.numel() else pos.new_tensor(0)
        rows_keep.append(kept)
        rows_pos.append(row_pos)
        shifts.append(last_old - last_new)
    keep, valid = pack_left(rows_keep)  # (B, N'), (B, N')
    length = keep.shape[1]
    packed_pos = position_ids.new_zeros(len(rows_pos[0]), len(rows_pos), length)  # (R, B, N')
    for b, r in enumerate(rows_pos):
        packed_pos[:, b, length - r.shape[1] :] = r
    return RebuiltPrompt(
        input_ids=take_tokens(input_ids, keep, valid, pad_token_id),
        attention_mask=take_tokens(attention_mask, keep, valid, 0),
        position_ids=packed_pos if multi_row else packed_pos[0],
        shift=torch.stack(shifts),
        keep=keep,
    )
