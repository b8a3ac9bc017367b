"""Efficient Global NAS's relative improvement over random search."""

from __future__ import annotations

import pytest

from orchestrator.methods.global_nas import relative_improvement
from tests.orchestrator.test_results import results_frame


def test_relative_improvement_matches_the_paper_formula():
    searched = results_frame([{"value": 96.0, "test_acc": 95.0}])
    random = results_frame([{"value": 90.0, "test_acc": 88.0}, {"value": 92.0, "test_acc": 92.0}, {"value": 0.0, "status": "failed"}])
    ri = relative_improvement(searched, random)
    assert ri["ri"] == pytest.approx(100 * (95.0 - 90.0) / 90.0)
    assert ri["ri_val"] == pytest.approx(100 * (96.0 - 91.0) / 91.0)
    assert ri["random_evaluations"] == 2


def test_relative_improvement_uses_the_mean_over_the_searched_networks_seeds():
    searched = results_frame([{"value": 96.0, "test_acc": 95.0}, {"value": 94.0, "test_acc": 91.0}])
    random = results_frame([{"value": 90.0, "test_acc": 92.0}])
    ri = relative_improvement(searched, random)
    assert ri["ri"] == pytest.approx(100 * (93.0 - 92.0) / 92.0)
    assert ri["ri_val"] == pytest.approx(100 * (95.0 - 90.0) / 90.0)
    assert ri["searched_test_accs"] == [95.0, 91.0]
