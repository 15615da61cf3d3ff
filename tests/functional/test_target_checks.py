"""check_target_range: every index outside [0, C) that is not ignore_index is refused, in every
integer dtype, whether or not the batch also holds ignored positions. classify_targets: the
same answer and the same refusals on every call, whatever form ``class_dim`` takes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from labelsmooth.functional._targets import check_target_range, classify_targets

C = 5


def _first_bad(values: list[int], ignore_index: int | None) -> int | None:
    """The hand reference: the first value outside [0, C) that is not ignore_index."""
    return next((v for v in values if not 0 <= v < C and v != ignore_index), None)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
@pytest.mark.parametrize("values", [
    [0, 4, 2], [0, 5, 2], [4, 4, -1], [-100, 3, 0], [-100, 7, 0], [3, -100, -7], [255, 0, 1],
])
@pytest.mark.parametrize("ignore_index", [-100, None, 255])
def test_every_out_of_range_index_is_refused(dtype: torch.dtype, values: list[int],
                                             ignore_index: int | None) -> None:
    targets = torch.tensor(values).to(dtype)  # uint8 wraps negatives: -1 is 255, as a user's would
    stored = [int(v) for v in targets.long()]
    bad = _first_bad(stored, ignore_index)
    if bad is None:
        check_target_range(targets, C, ignore_index, validate_args=None)
    else:
        with pytest.raises(ValueError, match=rf"targets: expected class indices in \[0, 5\).*, got {bad} at"):
            check_target_range(targets, C, ignore_index, validate_args=None)


def test_no_check_when_asked_not_to_or_when_empty() -> None:
    check_target_range(torch.tensor([9]), C, None, validate_args=False)
    check_target_range(torch.empty(0, dtype=torch.long), C, None, validate_args=True)


@pytest.mark.parametrize("class_dim", [1, -2, np.int64(1)])
def test_classify_answers_alike_on_every_call(class_dim: object) -> None:
    logits = torch.zeros(2, 3, 4)
    for _ in range(2):  # the second call is answered from the memo of shapes (for an int)
        assert classify_targets(logits, torch.zeros(2, 4, dtype=torch.long), class_dim) == ("index", 1)
        assert classify_targets(logits, torch.zeros(2, 3, 4), class_dim) == ("dense", 1)
        with pytest.raises(TypeError, match=r"targets: expected an integer tensor of class indices, got dtype torch.float32"):
            classify_targets(logits, torch.zeros(2, 4), class_dim)
        with pytest.raises(ValueError, match=r"targets: expected class indices of shape \(2, 4\) or dense targets of shape \(2, 3, 4\).*got shape \(2, 5\)"):
            classify_targets(logits, torch.zeros(2, 5, dtype=torch.long), class_dim)


@pytest.mark.parametrize("class_dim", [[1], True, 1.0])
def test_classify_refuses_a_class_dim_that_is_not_an_int_in_one_line(class_dim: object) -> None:
    with pytest.raises(TypeError, match=r"^class_dim: expected an int, got "):
        classify_targets(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), class_dim)
