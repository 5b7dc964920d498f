"""Sequence bookkeeping: where each image's tokens are, and rebuilding a shorter prompt after pre-LLM reduction."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmaccel.errors import ConfigError


def visual_index(input_ids: torch.Tensor, image_token_id: int, counts: list[int]) -> torch.Tensor:
    """Which image each token belongs to, numbered within its row (-1 for text and padding).

    input_ids: (B, N); counts: placeholder tokens per image in (batch, sequence) order, the order in which the
    model consumes image features. Adjacent images are split by their counts, never by fixed offsets.
    Returns (B, N) long.
    """
    index = torch.full_like(input_ids, -1)
    image = 0
    for row in range(input_ids.shape[0]):
        positions = torch.nonzero(input_ids[row] == image_token_id).flatten()
        offset, local = 0, 0
        while offset < positions.numel():
            if image >= len(counts):
                raise ConfigError(
                    f"row {row} has more image placeholder tokens than the {len(counts)} image(s) provide features for"
                )
            index[row, positions[offset : offset + counts[image]]] = local
            offset += counts[image]
            image += 1
            local += 1
        if offset != positions.numel():
            raise ConfigError(f"row {row}: image placeholder tokens do not split into whole images of {counts}")
    if image != len(counts):
        raise ConfigError(f"{len(counts)} image(s) were given but the prompts hold placeholders for {image}")
    return index


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
    position_ids: torch.Tensor  # (B, N')
    shift: torch.Tensor  # (B,) original minus new position of each row's last token (decode continues from it)


def rebuild_prompt(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    image_token_id: int,
    counts_in: list[int],
    counts_out: list[int],
    sources: list[torch.Tensor],
    positions: str,
    pad_token_id: int,
) -> RebuiltPrompt:
    """Shrink each image's placeholder run from ``counts_in`` to ``counts_out`` tokens; left re-pad the rows.

    input_ids, attention_mask, position_ids: (B, N). ``sources[g]`` (counts_out[g],): the original visual token
    (index within image g) each kept feature stands for, -1 for a token that is not a patch (it then takes the
    position of the image's first placeholder). ``positions="original"`` gives each kept token the position
    of its source; ``"contiguous"`` renumbers the rebuilt prompt from its attention mask.
    """
    rows_ids, rows_mask, rows_pos, shifts = [], [], [], []
    image = 0
    for row in range(input_ids.shape[0]):
        ids, mask, pos = input_ids[row], attention_mask[row], position_ids[row]
        placeholders = torch.nonzero(ids == image_token_id).flatten()
        keep = torch.ones_like(ids, dtype=torch.bool)
        new_pos = pos.clone()
        offset = 0
        while offset < placeholders.numel():
            span = placeholders[offset : offset + counts_in[image]]  # (n_in,)
            n_out = counts_out[image]
            keep[span[n_out:]] = False
            source = sources[image].to(span.device)
            new_pos[span[:n_out]] = pos[span[source.clamp(min=0)]]
            offset += counts_in[image]
            image += 1
        kept = torch.nonzero(keep).flatten()
        row_mask = mask[kept]
        if positions == "original":
            row_pos = new_pos[kept]
        else:
            row_pos = (row_mask.long().cumsum(0) - 1).clamp(min=0)
        real = torch.nonzero(mask).flatten()
        last_old = pos[real[-1]] if real.numel() else pos.new_tensor(0)
        real_new = torch.nonzero(row_mask).flatten()
        last_new = row_pos[real_new[-1]] if real_new.numel() else pos.new_tensor(0)
        rows_ids.append(ids[kept])
        rows_mask.append(row_mask)
        rows_pos.append(row_pos)
        shifts.append(last_old - last_new)
    length = max(r.numel() for r in rows_ids)

    def left_pad(rows: list[torch.Tensor], fill: int) -> torch.Tensor:
        out = rows[0].new_full((len(rows), length), fill)
        for b, r in enumerate(rows):
            out[b, length - r.numel() :] = r
        return out

    return RebuiltPrompt(
        input_ids=left_pad(rows_ids, pad_token_id),
        attention_mask=left_pad(rows_mask, 0),
        position_ids=left_pad(rows_pos, 0),
        shift=torch.stack(shifts),
    )
