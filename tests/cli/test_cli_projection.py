"""The command projects the test activations onto the plane of three class templates."""

from __future__ import annotations

import math

import torch


def test_the_command_projects_the_test_activations_of_classes_0_1_2_onto_their_templates() -> None:
    # Hand-built: templates 2*e0, 2*e1, 2*e2 in R^4, so u1 = (e1 - e0)/sqrt(2), u2 = (-1, -1, 2, 0)/sqrt(6),
    # origin (2/3, 2/3, 2/3, 0). A class-0 point (2, 0, 0, 5) lands on template 0, (-sqrt 2, -2/sqrt 6);
    # the class-1 point 0 differs from the origin by a multiple of (1, 1, 1, 0), orthogonal to the plane,
    # so it lands on (0, 0); the class-3 point is left out.
    from labelsmooth.cli.experiment import _projection
    from labelsmooth.cli.models import build_model

    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=4, width=4)
    with torch.no_grad():
        model.head.weight.copy_(2 * torch.eye(4))
    targets = torch.tensor([3, 1, 2, *[0] * 160])
    features = torch.zeros(len(targets), 4)
    features[0] = torch.tensor([9.0, 9.0, 9.0, 9.0])
    features[2] = torch.tensor([0.0, 0.0, 2.0, 0.0])
    features[3:] = torch.tensor([2.0, 0.0, 0.0, 5.0])
    projection = _projection(model, features, targets)
    assert projection is not None
    r2, r6 = math.sqrt(2), math.sqrt(6)
    template_points = [[-r2, -2 / r6], [r2, -2 / r6], [0.0, 4 / r6]]
    assert projection["classes"] == [0, 1, 2]
    assert projection["labels"] == [0] * 150 + [1, 2]  # at most 150 points per class
    # results.json keeps 4 decimals.
    torch.testing.assert_close(torch.tensor(projection["templates"]), torch.tensor(template_points),
                               rtol=0, atol=1e-4)
    expected_points = [template_points[0]] * 150 + [[0.0, 0.0], template_points[2]]
    torch.testing.assert_close(torch.tensor(projection["points"]), torch.tensor(expected_points),
                               rtol=0, atol=1e-4)
