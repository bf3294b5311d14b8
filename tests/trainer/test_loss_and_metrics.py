import numpy as np
import pytest
import torch

from trainer.losses import CeLogJaccardLoss, soft_jaccard
from trainer.metrics import confusion_matrix, dice, fwiou, miou, per_class_iou


def test_loss_has_finite_gradients_everywhere():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    loss = CeLogJaccardLoss()(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_loss_is_ce_minus_log_jaccard_and_small_for_a_perfect_prediction():
    target = torch.randint(0, 3, (1, 8, 8))
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 30
    assert CeLogJaccardLoss()(perfect, target).item() < 1e-3
    assert abs(soft_jaccard(perfect, target).item() - 1.0) < 1e-4
    logits = torch.randn(1, 3, 8, 8)
    expected = torch.nn.functional.cross_entropy(logits, target) - torch.log(soft_jaccard(logits, target))
    assert torch.allclose(CeLogJaccardLoss()(logits, target), expected)


def test_jaccard_hand_computed():
    # two pixels, class 0 and class 1, prediction fully confident on class 0 for both
    logits = torch.tensor([[[[50.0, 50.0]], [[-50.0, -50.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    # class 0: inter 1, union 2+1-1 = 2 → (1+ε)/(2+ε); class 1: inter 0, union 0+1-0 = 1 → ε/(1+ε)
    eps = 1.0
    expected = ((1 + eps) / (2 + eps) + eps / (1 + eps)) / 2
    assert abs(soft_jaccard(logits, target, eps).item() - expected) < 1e-5


def test_metrics_against_a_hand_computed_confusion_matrix():
    truth = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 1, 2, 0])
    cm = confusion_matrix(pred, truth, 3)
    assert cm.tolist() == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]
    # IoU: bg 3/(4+4-3)=0.6, rbc 2/(2+3-2)=2/3, mac 1/(2+1-1)=0.5
    assert np.allclose(per_class_iou(cm), [0.6, 2 / 3, 0.5])
    assert miou(cm) == pytest.approx((0.6 + 2 / 3 + 0.5) / 3)
    # eq. 6 weights each IoU by the class's ground-truth frequency: 4/8, 2/8, 2/8
    assert fwiou(cm) == pytest.approx(0.5 * 0.6 + 0.25 * 2 / 3 + 0.25 * 0.5)
    # Dice: 2·3/(4+4), 2·2/(2+3), 2·1/(2+1)
    assert dice(cm) == pytest.approx((6 / 8 + 4 / 5 + 2 / 3) / 3)


def test_absent_class_is_skipped_in_miou():
    cm = confusion_matrix(np.array([0, 1]), np.array([0, 1]), 3)
    assert np.isnan(per_class_iou(cm)[2]) and miou(cm) == 1.0
