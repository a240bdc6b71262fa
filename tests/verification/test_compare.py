"""compare.Comparison: the one output check every pass uses."""
from __future__ import annotations

import numpy as np
import pytest

from optkit.verification.comparator import Comparison, Tolerance, check_finite, output_problems
from optkit.common.errors import PassFailed


def test_per_output_tolerances_and_accumulated_figures():
    ref = {"a": np.zeros(4, np.float32), "b": np.ones(4, np.float32)}
    got = {"a": np.full(4, 0.05, np.float32), "b": np.ones(4, np.float32) + 1e-6}
    c = Comparison("the model", {"a": Tolerance(atol=0.1), "b": Tolerance(atol=1e-5)})
    c.add(ref, got)
    assert c.per_output["a"] == pytest.approx(0.05) and c.max_abs_diff == pytest.approx(0.05)
    assert c.rel_error == pytest.approx(np.sqrt(4 * 0.05**2) / np.sqrt(4.0), rel=1e-3)
    tight = Comparison("the model", {"a": Tolerance(atol=0.01)})
    with pytest.raises(PassFailed, match=r"the model does not match its input: max \|diff\| 0.05 on a"):
        tight.add(ref, got)


@pytest.mark.parametrize("got, message", [
    ({"a": np.zeros(4)}, "lost output b"),
    ({"a": np.zeros(4), "b": np.zeros(5)}, r"changed output b shape \(4,\) -> \(5,\)"),
    ({"a": np.zeros(4), "b": np.array([1, np.inf, 1, 1])}, "produces inf/NaN in output b on sample 3; hint"),
])
def test_structural_problems_are_one_line_errors(got, message):
    ref = {"a": np.zeros(4), "b": np.ones(4)}
    with pytest.raises(PassFailed, match=message):
        Comparison("the model", hint="hint").add(ref, got, where="on sample 3")


def test_helpers():
    assert output_problems({"a": np.zeros(2)}, {"a": np.zeros(3)}) == ["output a shape (3,) != reference (2,)"]
    check_finite({"i": np.array([1, 2])}, "x")  # integer outputs are always finite
    with pytest.raises(PassFailed, match="engine produces inf/NaN in output y"):
        check_finite({"y": np.array([np.nan], np.float32)}, "engine")
