"""Pure tensor functions: no ``nn.Module``, no Hugging Face imports.

Every function documents the shapes it takes and returns, so that methods read like their papers' pseudo-code.
"""

from mmaccel.ops.attention import attention_rows, cls_attention
from mmaccel.ops.pool import pool_grid
from mmaccel.ops.select import keep_count, topk_keep, topk_keep_in_groups

__all__ = ["attention_rows", "cls_attention", "keep_count", "pool_grid", "topk_keep", "topk_keep_in_groups"]
