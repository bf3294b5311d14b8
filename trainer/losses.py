"""The paper's loss, equation (4): L = H − log J, cross-entropy plus the log of a soft Jaccard index."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def soft_jaccard(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Mean over classes of |A∩B| / (|A|+|B|−|A∩B|) (eq. 3) with softmax probabilities for A, over the batch.

    ``eps`` smooths classes absent from a batch so they count as agreement instead of dividing by zero.
    """
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target.long(), logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    union = probs.sum(dims) + onehot.sum(dims) - inter
    return ((inter + eps) / (union + eps)).mean()


class CeLogJaccardLoss(nn.Module):
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target.long()) - torch.log(soft_jaccard(logits.float(), target))
