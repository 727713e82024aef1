"""affine.py: CenterAround."""

import numpy as np
import pytest
from keras import ops

import kconstraints as kc
from tests.helpers import tensor
from tests.properties import Case, PropertySuite
from tests.references import center_ref


class TestCenterAroundProperties(PropertySuite):
    cases = [
        Case(kc.CenterAround(), (6, 4), center_ref(0.0, None)),
        Case(kc.CenterAround(0.5, axis=0), (6, 4), center_ref(0.5, 0)),
        Case(kc.CenterAround(-1.0, axis=[0, -2]), (3, 4, 2), center_ref(-1.0, (0, 1))),
    ]


def test_center_around_rejects_bad_arguments():
    with pytest.raises(ValueError, match="CenterAround.*ref_value"):
        kc.CenterAround(ref_value="zero")
    with pytest.raises(ValueError, match="CenterAround.*axis"):
        kc.CenterAround(axis=1.5)


def test_center_around_axis_out_of_range_names_axis_and_shape():
    with pytest.raises(ValueError, match=r"axis.*3.*\(4, 2\)"):
        kc.CenterAround(axis=3)(tensor(np.ones((4, 2))))


def test_integer_weights_are_a_type_error():
    with pytest.raises(TypeError, match="int32"):
        kc.CenterAround()(ops.convert_to_tensor(np.arange(4, dtype="int32")))
