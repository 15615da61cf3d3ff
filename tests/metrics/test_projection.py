"""The penultimate-layer projection onto the plane of three class templates."""

from __future__ import annotations

import math

import pytest
import torch

from labelsmooth.metrics import project_onto_plane, template_plane


def test_hand_built_templates_form_an_equilateral_triangle() -> None:
    # Templates e0, e1, e2 in R^4. Origin: their centroid (1/3, 1/3, 1/3, 0).
    # u1 = (e1 - e0)/sqrt(2); u2 = (-1, -1, 2, 0)/sqrt(6) (Gram-Schmidt of e2 - e0 against u1).
    templates = torch.eye(4, dtype=torch.float64)[:3]
    plane = template_plane(templates)
    r2, r6 = math.sqrt(2), math.sqrt(6)
    expected_basis = torch.tensor([[-1 / r2, 1 / r2, 0, 0], [-1 / r6, -1 / r6, 2 / r6, 0]],
                                  dtype=torch.float64)
    torch.testing.assert_close(plane.origin, torch.tensor([1 / 3, 1 / 3, 1 / 3, 0], dtype=torch.float64))
    torch.testing.assert_close(plane.basis, expected_basis)
    expected = torch.tensor([[-1 / r2, -1 / r6], [1 / r2, -1 / r6], [0, 2 / r6]], dtype=torch.float64)
    torch.testing.assert_close(project_onto_plane(templates, plane), expected)
    # A component along e3, orthogonal to the plane, is dropped; the centroid maps to (0, 0).
    point = torch.tensor([[1 / 3, 1 / 3, 1 / 3, 7.0]], dtype=torch.float64)
    torch.testing.assert_close(project_onto_plane(point, plane), torch.zeros(1, 2, dtype=torch.float64))


def test_matches_the_projection_matrix_of_the_plane() -> None:
    # Independent reference: the orthogonal projector A (A^T A)^{-1} A^T onto span(w1 - w0, w2 - w0).
    generator = torch.Generator().manual_seed(0)
    templates = torch.randn(3, 16, generator=generator, dtype=torch.float64)
    features = torch.randn(50, 16, generator=generator, dtype=torch.float64)
    plane = template_plane(templates)
    coordinates = project_onto_plane(features, plane)

    spanning = torch.stack([templates[1] - templates[0], templates[2] - templates[0]], dim=1)
    projector = spanning @ torch.linalg.inv(spanning.T @ spanning) @ spanning.T
    centroid = templates.mean(dim=0)
    projected = (features - centroid) @ projector
    # Same distances from the centroid and between points: the coordinates are an isometry of the
    # projected points, and the basis is orthonormal.
    torch.testing.assert_close(coordinates.norm(dim=1), projected.norm(dim=1))
    torch.testing.assert_close(torch.cdist(coordinates, coordinates), torch.cdist(projected, projected))
    torch.testing.assert_close(plane.basis @ plane.basis.T, torch.eye(2, dtype=torch.float64))
    # The first axis points from template 0 to template 1.
    first = project_onto_plane(templates, plane)
    assert first[1, 0] > first[0, 0] and torch.isclose(first[1, 1], first[0, 1])


def test_degenerate_templates_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"^templates: expected three templates spanning a plane, got two equal"):
        template_plane(torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="collinear"):
        template_plane(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]))
    with pytest.raises(TypeError, match=r"^templates: expected a floating-point tensor of shape \(3, D\)"):
        template_plane(torch.zeros(4, 3))
    plane = template_plane(torch.eye(3))
    with pytest.raises(ValueError, match=r"^features: expected a tensor of shape \(N, 3\)"):
        project_onto_plane(torch.zeros(2, 5), plane)
