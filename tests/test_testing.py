"""kconstraints.testing: a user's constraint passes, each broken one fails on its property.

Every broken constraint here breaks one property on purpose, and the check
must name that property first and show the smallest failing input.
"""

import json
import math
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

import kconstraints as kc
from kconstraints.testing import (
    KINDS,
    PROPERTIES,
    Input,
    check_constraint,
    per_shape,
    varied_shapes,
)
from kconstraints.testing import __main__ as cli
from kconstraints.testing._inputs import exponent_range
from tests.backend import BACKEND

FEW = {"examples": 4}


@keras.saving.register_keras_serializable(package="kconstraints_tests")
class CenterAround(keras.constraints.Constraint):
    """The Keras guide's example (background 001), its mean taken as a sum over the size:
    `ops.mean` reduces float64 in float32 on JAX and torch (Keras 3.15), and TensorFlow
    refuses a float16 sum divided by `ops.size`'s int32."""

    def __init__(self, ref_value=0.0):
        self.ref_value = ref_value

    def __call__(self, w):
        return w - ops.sum(w) / math.prod(w.shape) + self.ref_value

    def get_config(self):
        return {"ref_value": self.ref_value}


def center_reference(w):
    return w - np.mean(w) + 0.5


def clip01(w):
    return ops.clip(w, 0, 1)


def test_a_user_constraint_holds_every_property():
    report = check_constraint(CenterAround(0.5), (6, 4), reference=center_reference, convex=True)
    want = [p for p in PROPERTIES if p not in ("feasible", "graph_break") or BACKEND == "torch"]
    want = [p for p in want if p != "feasible"]
    assert list(report.inputs) == want
    assert all(n > 0 for n in report.inputs.values()), report
    assert report.skipped["feasible"] == "no `feasible` given"
    assert report.inputs["shape"] == 4 * 20  # 20 inputs per dtype, four dtypes
    assert "CenterAround" in str(report) and "ok on 80 inputs" in str(report)


def test_a_plain_function_has_no_config_to_check():
    report = check_constraint(
        clip01,
        (5, 3),
        reference=lambda w: np.clip(w, 0, 1),
        feasible=lambda p, tol: np.all((p >= 0) & (p <= 1)),
        convex=True,
        properties=["feasible", "reference", "optimal", "serialization", "empty"],
        kinds=["normal", "one_huge"],  # subnormal inputs are checked for finiteness only
        **FEW,
    )
    assert report.skipped == {"serialization": "a plain function has no config"}
    assert report.inputs == {"feasible": 16, "reference": 16, "optimal": 16, "empty": 4}
    assert report.constraint == "clip01"


def test_a_per_shape_factory_is_built_for_each_varied_shape():
    built = []

    def make(shape):
        built.append(shape)
        return kc.Simplex(axis=0)

    report = check_constraint(per_shape(make), (6, 4), properties=["shape"], dtypes=["float32"])
    assert report.shapes == varied_shapes((6, 4)) == [(6, 4), (6, 1), (24, 4), (18, 4), (4, 18)]
    assert sorted(set(built)) == sorted(report.shapes)


def test_varied_shapes_of_a_vector_and_of_a_conv_kernel():
    assert varied_shapes((5,)) == [(5,), (1,), (20,)]
    assert varied_shapes((3, 3, 2, 4)) == [
        (3, 3, 2, 4),
        (3, 3, 2, 1),
        (3, 3, 2, 16),
        (3, 3, 12, 2),
        (3, 3, 2, 12),
    ]


class Drifting:
    """Adds its own call count: eager, compiled and fit() results all differ."""

    calls = 0

    def __call__(self, w):
        self.calls += 1
        return w + float(self.calls)


def _reads_a_value(w):
    return w * float(ops.convert_to_numpy(ops.sum(w)) > 0)


BROKEN = [
    ("shape", lambda w: ops.reshape(w, (-1,)), {}),
    ("dtype", lambda w: ops.cast(w, "float32"), {"dtypes": ["float16"]}),
    ("finite", lambda w: w / ops.sqrt(ops.sum(w * w)), {}),
    ("feasible", lambda w: ops.clip(w, 0, 2), {"feasible": lambda p, tol: np.all(p <= 1 + tol)}),
    ("reference", clip01, {"reference": lambda w: np.clip(w, 0, 2)}),
    ("idempotent", lambda w: w * 0.5, {}),
    ("unchanged", clip01, {"reference": lambda w: np.clip(w, 0, 2)}),
    ("nonexpansive", lambda w: w * 2, {"convex": True}),
    # Feasible, but on the far side of the box: <w - P(w), z - P(w)> > 0.
    ("optimal", lambda w: 1 - clip01(w), {"reference": lambda w: np.clip(w, 0, 1)}),
    ("jit", Drifting(), {}),
    ("fit", Drifting(), {}),
    ("serialization", type("Unregistered", (keras.constraints.Constraint,), {})(), {}),
]


@pytest.mark.parametrize("name, constraint, options", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_constraint_fails_on_its_property(name, constraint, options):
    options = {"convex": name == "optimal", **options}
    with pytest.raises(AssertionError, match=rf"^{name}: ") as failure:
        check_constraint(constraint, (4, 3), properties=[name], **FEW, **options)
    if name not in ("fit", "serialization"):
        assert "\n  input: " in str(failure.value) and "Input(shape=(4, 3)" in str(failure.value)


def test_reading_a_value_breaks_the_torch_graph_and_fails_the_xla_compilers():
    name = "graph_break" if BACKEND == "torch" else "jit"
    with pytest.raises(AssertionError, match=rf"^{name}: "):
        check_constraint(_reads_a_value, (4, 3), properties=["jit", "graph_break"], **FEW)


def test_an_empty_weight_that_raises_fails_empty():
    def less_first_row(w):
        return w - w[0]

    with pytest.raises(AssertionError, match=r"^empty: a \(0, 3\) weight raised"):
        check_constraint(less_first_row, (4, 3), properties=["empty"])


def test_a_failure_shrinks_to_the_simplest_input():
    with pytest.raises(AssertionError) as failure:
        check_constraint(lambda w: w * 0.5, (4, 3), properties=["idempotent"], dtypes=["float32"])
    message = str(failure.value)
    assert "kind='normal', exponent=0, seed=0" in message, message


def test_the_same_seed_tries_the_same_inputs():
    def tried(seed):
        seen = []

        def spy(w):
            seen.append(float(ops.convert_to_numpy(ops.sum(w))))
            return w

        check_constraint(spy, (3, 2), properties=["shape"], dtypes=["float32"], seed=seed)
        return seen

    assert tried(0) == tried(0) != tried(1)


def test_inputs_are_rebuilt_from_their_numbers_and_stay_in_their_dtype():
    for kind in KINDS:
        a, b = Input((4, 5), "float32", kind, 3, 7).values(), Input((4, 5), "float32", kind, 3, 7)
        np.testing.assert_array_equal(a, b.values())
    huge = Input((4, 5), "float32", "one_huge", 30, 0).values()
    assert np.max(np.abs(huge)) == 1e30 and np.all(np.abs(huge) < 1e30 * 1.01)
    tiny = Input((4, 5), "float32", "subnormal", 0, 0).values()
    assert 0 < np.max(np.abs(tiny)) < np.finfo("float32").tiny
    assert exponent_range("float16", 20) == (-3, 2)
    assert exponent_range("float32", 20) == (-30, 30)
    assert exponent_range("float64", 20, (-300, 300)) == (-300, 300)
    low, high = exponent_range("float32", 10**6, (-300, 300))
    assert 10.0**high * 10 * 10**6 < np.finfo("float32").max and low == -36


@pytest.mark.parametrize(
    "options, match",
    [
        ({"properties": ["idempotence"]}, r"properties: unknown \['idempotence'\]"),
        ({"dtypes": ["float8"]}, r"dtypes: each must be one of .* got 'float8'"),
        ({"kinds": ["huge"]}, r"kinds: must be some of .* got \['huge'\]"),
        ({"exponents": (40, 50), "dtypes": ["float16"]}, r"exponents: \(40, 50\) leaves no scale"),
    ],
)
def test_bad_options_name_the_argument(options, match):
    with pytest.raises(ValueError, match=match):
        check_constraint(clip01, (4, 3), **options)


MODULE = """
import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cli_test")
class Halve(keras.constraints.Constraint):
    def __call__(self, w):
        return w * 0.5


def clip01(w):
    return ops.clip(w, 0, 1)


def reference(w):
    import numpy as np

    return np.clip(w, 0, 1)
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_constraints.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _cli(*args):
    command = [sys.executable, "-m", "kconstraints.testing", *args, "--backends", BACKEND]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_the_command_line_prints_a_table_and_exits_zero_when_all_hold(user_module):
    done = _cli("user_constraints:clip01", "--shape", "4,3", "--examples", "3",
                "--reference", "user_constraints:reference", "--convex",
                "--properties", "shape,reference,optimal,serialization")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"| property | {BACKEND} |" in done.stdout
    assert "| reference | ok (12) |" in done.stdout
    assert "| serialization | n/a: a plain function has no config |" in done.stdout


def test_the_command_line_shows_the_failure_and_exits_one(user_module):
    done = _cli("user_constraints:Halve", "--shape", "4,3", "--examples", "3",
                "--properties", "shape,idempotent", "--dtypes", "float32")  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "| shape | ok (3) |" in done.stdout and "| idempotent | **failed** |" in done.stdout
    assert f"{BACKEND}: idempotent: P(P(w)) differs from P(w)" in done.stdout


def test_the_worker_prints_one_json_object_per_property(user_module, capsys):
    args = ["user_constraints:Halve", "--shape", "3", "--examples", "2", "--worker",
            "--properties", "dtype,idempotent,reference", "--dtypes", "float32"]  # fmt: skip
    assert cli.main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["property"], r["status"]) for r in lines] == [
        ("dtype", "ok"),
        ("idempotent", "failed"),
        ("reference", "skipped"),
    ]
    assert lines[0]["inputs"] == 2 and lines[1]["message"].startswith("idempotent: ")


def test_the_command_line_builds_a_class_and_calls_a_factory():
    assert isinstance(cli.constraint_of(kc.NonNeg), kc.NonNeg)
    assert isinstance(cli.constraint_of(lambda: kc.NonNeg()), kc.NonNeg)
    assert cli.constraint_of(clip01) is clip01
    factory = per_shape(lambda shape: kc.NonNeg())
    assert cli.constraint_of(factory) is factory
