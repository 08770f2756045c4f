"""metrics: pure functions of class probabilities and labels, checked by hand."""
import math

import pytest
import torch
from torch import nn

from pyrocompress.metrics import (agreement, classification_metrics, expected_calibration_error, kl_to_reference,
                                  ood_auroc, parameter_counts, predictive_entropy, total_variation)


def test_classification_metrics_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    y = torch.tensor([0, 1, 1])
    m = classification_metrics(probs, y)
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["nll"] == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3)
    assert m["brier"] == pytest.approx(((0.1 ** 2 + 0.1 ** 2) + (0.2 ** 2 + 0.2 ** 2) + (0.6 ** 2 + 0.6 ** 2)) / 3)
    assert m["entropy"] == pytest.approx(float(predictive_entropy(probs).mean()))


def test_ece_of_a_perfectly_calibrated_and_an_overconfident_predictor():
    y = torch.tensor([0, 0, 1, 1])
    calibrated = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert expected_calibration_error(calibrated, y) == pytest.approx(0.0)
    wrong = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # always sure, right half the time
    assert expected_calibration_error(wrong, y) == pytest.approx(0.5)


def test_agreement_total_variation_and_kl():
    p = torch.tensor([[0.7, 0.3], [0.4, 0.6]])
    q = torch.tensor([[0.6, 0.4], [0.5, 0.5]])
    assert agreement(p, q) == pytest.approx(0.5)  # the second row's argmax differs
    assert total_variation(p, q) == pytest.approx(0.1)
    kl = (0.6 * math.log(0.6 / 0.7) + 0.4 * math.log(0.4 / 0.3) + 0.5 * math.log(0.5 / 0.4)
          + 0.5 * math.log(0.5 / 0.6)) / 2
    assert kl_to_reference(p, q) == pytest.approx(kl)
    assert kl_to_reference(q, q) == pytest.approx(0.0) and total_variation(q, q) == 0.0 and agreement(q, q) == 1.0


def test_ood_auroc_separates_confident_from_uncertain_inputs():
    confident = torch.tensor([[0.99, 0.01], [0.98, 0.02], [0.97, 0.03]])
    uncertain = torch.tensor([[0.5, 0.5], [0.55, 0.45]])
    assert ood_auroc(confident, uncertain) == pytest.approx(1.0)
    assert ood_auroc(uncertain, confident) == pytest.approx(0.0)


def test_parameter_counts_of_a_plain_network():
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.zero_()
    counts = parameter_counts(net)
    assert counts["total"]["params"] == 3 * 2 + 2 + 2 + 1
    assert counts["0"]["nonzero"] == int((net[0].bias != 0).sum())
