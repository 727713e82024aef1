"""Where the arrays live, so that a silent CPU fallback can not pass as a GPU run.

`nox -s gpu` sets KCONSTRAINTS_EXPECT_DEVICE=gpu (and `nox -s tests` sets
cpu): Keras must then put new arrays and variables on that kind of device,
and every array of a compiled constraint call and of a compiled train step
must stay there. Run by hand without the variable, the
suite does not know which device was meant, and these tests skip.
"""

import os

import keras
import numpy as np
import pytest

import kconstraints as kc
from tests.backend import BACKEND, device_kind, jit, on_gpu

EXPECTED = os.environ.get("KCONSTRAINTS_EXPECT_DEVICE")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        EXPECTED is None,
        reason="set KCONSTRAINTS_EXPECT_DEVICE=gpu (or cpu) to check where arrays live",
    ),
    # Keras traces its dtype lattice (an lru_cache) inside torch.compile.
    pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`"),
]


def test_keras_puts_new_arrays_and_variables_on_the_expected_device():
    assert EXPECTED in ("cpu", "gpu"), f"KCONSTRAINTS_EXPECT_DEVICE={EXPECTED!r}"
    assert on_gpu() == (EXPECTED == "gpu"), (BACKEND, EXPECTED)
    array = keras.ops.ones((8, 4))
    variable = keras.Variable(np.ones((8, 4), "float32"))
    assert device_kind(array) == EXPECTED, (BACKEND, array)
    assert device_kind(variable.value) == EXPECTED, (BACKEND, variable.value)
    assert device_kind(kc.MaxNorm(1.0)(variable)) == EXPECTED, BACKEND


def test_compiled_constraint_runs_on_the_expected_device():
    w = keras.ops.convert_to_tensor(np.ones((8, 4), "float32"))
    out = jit(kc.MaxNorm(1.0))(w)
    assert (device_kind(w), device_kind(out)) == (EXPECTED, EXPECTED), BACKEND


def test_compiled_train_step_keeps_weights_on_the_expected_device():
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, kernel_constraint=kc.UnitNorm())(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    assert model.jit_compile, f"{BACKEND}: Keras turned jit_compile off"
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    kernel = model.layers[-1].kernel
    assert device_kind(kernel.value) == EXPECTED, (BACKEND, kernel.value)
    norms = np.linalg.norm(keras.ops.convert_to_numpy(kernel.value), axis=0)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
