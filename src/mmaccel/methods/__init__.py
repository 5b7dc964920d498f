"""Built-in methods. Importing this package registers each of them (an explicit list, no discovery magic)."""

from mmaccel.methods.base import (
    BlockReduction,
    BlockTokens,
    LayerTokens,
    Needs,
    ScorePruner,
    Stage,
    TokenMethod,
    VisualReduction,
    VisualTokens,
)
from mmaccel.methods.downsample import Downsample
from mmaccel.methods.evit import EViT
from mmaccel.methods.fastervlm import FasterVLM
from mmaccel.methods.fastv import FastV
from mmaccel.methods.pool import Pool
from mmaccel.methods.prumerge import PruMerge, PruMergePlus
from mmaccel.methods.random_prune import RandomPrune
from mmaccel.methods.registry import get_method, list_methods, register_method
from mmaccel.methods.sparsevlm import SparseVLM
from mmaccel.methods.tome import ToMe
from mmaccel.methods.visionzip import VisionZip

__all__ = [
    "BlockReduction",
    "BlockTokens",
    "Downsample",
    "EViT",
    "FastV",
    "FasterVLM",
    "LayerTokens",
    "Needs",
    "Pool",
    "PruMerge",
    "PruMergePlus",
    "RandomPrune",
    "ScorePruner",
    "SparseVLM",
    "Stage",
    "ToMe",
    "TokenMethod",
    "VisionZip",
    "VisualReduction",
    "VisualTokens",
    "get_method",
    "list_methods",
    "register_method",
]
