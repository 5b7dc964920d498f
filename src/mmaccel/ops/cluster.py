"""DPC-KNN: density-peak clustering with k-nearest-neighbour densities, and merging by cluster mean.

Density peaks (Rodriguez & Laio, Science 2014) with the kNN density of DPC-KNN (Du et al., 2016), as token
merging methods use it (SparseVLM recycles pruned tokens with it; TCFormer introduced it for tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MERGE_EPS = 1e-6  # added to each cluster's size before averaging, as the reference implementations do


@dataclass
class Clusters:
    """Result of :func:`dpc_knn`: ``merged`` (C, D) in centre order, ``centres`` (C,) indices into the N inputs
    (highest density-peak score first), ``assignment`` (N,) the cluster of every input, ``weights`` (C, N) with
    ``merged = weights @ x``."""

    merged: torch.Tensor
    centres: torch.Tensor
    assignment: torch.Tensor
    weights: torch.Tensor


def dpc_knn(x: torch.Tensor, n_clusters: int) -> Clusters:
    """Cluster the N rows of ``x`` (N, D) into ``n_clusters`` and average each cluster.

    - distances: d_ij = ||x_i - x_j|| / sqrt(D) in float32, from the pairwise differences (``torch.cdist`` without
      the expanded form ||x_i||^2 + ||x_j||^2 - 2 x_i.x_j, whose cancellation loses precision between close
      tokens); memory O(N^2), never an (N, N, D) tensor;
    - density: rho_i = exp(-mean of d_ij^2 over the ``n_clusters`` nearest j, i itself included);
    - delta_i = distance to the nearest denser token (the largest distance of all pairs for the densest);
    - centres: the ``n_clusters`` largest rho_i * delta_i; every token joins its nearest centre (a centre joins
      itself); ties go to the first centre;
    - merged token = sum of members / (members + 1e-6).

    Equal densities are ordered by index (the lower index counts as denser) instead of by random noise, so
    the result is deterministic. ``1 <= n_clusters <= N``.
    """
    n_tokens, dim = x.shape
    if not 1 <= n_clusters <= n_tokens:
        raise ValueError(f"n_clusters={n_clusters} must be in [1, {n_tokens}]")
    points = x.float()
    dist = torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist") / dim**0.5  # (N, N)
    nearest = torch.topk(dist, k=n_clusters, dim=-1, largest=False).values  # (N, k)
    density = (-(nearest**2).mean(dim=-1)).exp()  # (N,)

    index = torch.arange(n_tokens, device=x.device)
    denser = (density[None, :] > density[:, None]) | (
        (density[None, :] == density[:, None]) & (index[None, :] < index[:, None])
    )  # (N, N): [i, j] = token j is denser than token i
    parent_dist = torch.where(denser, dist, dist.max()).min(dim=-1).values  # (N,)
    score = parent_dist * density
    centres = torch.sort(score, descending=True, stable=True).indices[:n_clusters]  # (C,)

    assignment = dist[centres].argmin(dim=0)  # (N,) nearest centre, first on ties
    clusters = torch.arange(n_clusters, device=x.device)
    assignment[centres] = clusters
    members = (assignment[None, :] == clusters[:, None]).to(points.dtype)  # (C, N) one-hot, no sync, vmappable
    weights = members / (members.sum(dim=1, keepdim=True) + MERGE_EPS)  # (C, N)
    merged = (weights @ points).to(x.dtype)  # (C, D)
    return Clusters(merged=merged, centres=centres, assignment=assignment, weights=weights.to(x.dtype))
