"""`check_constraint`: the properties of a constraint, checked on the active backend.

Each property is a function of one generated `Input` (the eager ones, the
compiled ones) or of none (`empty`, `serialization`, `fit`). A failure is
an `AssertionError` whose message starts with the property's name; for the
generated inputs, hypothesis first shrinks it to the smallest input that
still fails, and the message shows that input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile

import keras
import numpy as np
from keras import ops

from kconstraints._backend import (
    float64_enabled,
    graph_break_count,
    graph_break_reasons,
    graph_breaks_possible,
    jit,
    reset_compiler,
)
from kconstraints.testing._inputs import DTYPES, EXPONENTS, KINDS, Input, strategy, varied_shapes

__all__ = ["PROPERTIES", "Report", "check_constraint", "per_shape"]

#: Every property, in the order they are checked and reported.
PROPERTIES = {
    "shape": "P(w) has the weight's shape",
    "dtype": "P(w) has the weight's dtype",
    "finite": "finite weights give a finite P(w)",
    "feasible": "feasible(P(w)) holds",
    "reference": "P(w) equals reference(w)",
    "idempotent": "P(P(w)) equals P(w)",
    "unchanged": "a feasible weight comes back unchanged",
    "nonexpansive": "|P(a) - P(b)| <= |a - b| (a convex set)",
    "optimal": "<w - P(w), z - P(w)> <= 0 for feasible z (a convex set)",
    "jit": "compiled by the backend's compiler, P(w) equals the eager P(w)",
    "graph_break": "torch.compile traces P in one graph",
    "empty": "a weight with no entries keeps its shape and dtype",
    "serialization": "the config, and a .keras model holding it, load back in safe mode",
    "fit": "one compiled fit() step leaves P(w - lr * grad)",
}
EAGER = ("shape", "dtype", "finite", "feasible", "reference", "idempotent", "unchanged")
CONVEX = ("nonexpansive", "optimal")
COMPILED = ("jit", "graph_break")
ONCE = ("empty", "serialization", "fit")
HALF = ("float16", "bfloat16")
EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23, "float64": 2.0**-52}


class per_shape:
    """Mark `make(shape) -> constraint` as built per weight shape.

    `check_constraint` then builds the constraint for each shape it tries,
    and tries more shapes than the one given: a size-1 axis, a long axis,
    and tall and wide matrices (`varied_shapes`).
    """

    def __init__(self, make):
        self.make = make
        self.__name__ = getattr(make, "__name__", "make")

    def __call__(self, shape):
        return self.make(tuple(shape))


@dataclasses.dataclass
class Report:
    """What `check_constraint` checked: each property's number of inputs, or why it was not."""

    constraint: str
    backend: str
    shapes: list
    dtypes: tuple
    inputs: dict = dataclasses.field(default_factory=dict)
    skipped: dict = dataclasses.field(default_factory=dict)

    def __str__(self):
        lines = [f"{self.constraint} on {self.backend}, shapes {self.shapes}, {list(self.dtypes)}:"]
        for name in PROPERTIES:
            if name in self.inputs:
                lines.append(f"  {name}: ok on {self.inputs[name]} inputs")
            elif name in self.skipped:
                lines.append(f"  {name}: not checked ({self.skipped[name]})")
        return "\n".join(lines)


def _ours(error):
    """A failure this module raised: its message starts with a property's name."""
    return isinstance(error, AssertionError) and str(error).partition(":")[0] in PROPERTIES


def _fail(name, message, w=None):
    where = f"\n  input: {w}" if w is not None else ""
    return AssertionError(f"{name}: {message}{where}")


def _to_np(x):
    if keras.backend.standardize_dtype(x.dtype) == "bfloat16":
        x = ops.cast(x, "float32")
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def _largest(a):
    return float(np.max(np.abs(a), initial=0.0)) if np.all(np.isfinite(a)) else math.inf


def _worst(got, want, atol):
    """A sentence on the entry of `got` farthest from `want`."""
    error = np.abs(got - want)
    i = np.unravel_index(np.argmax(np.where(np.isnan(error), np.inf, error)), got.shape)
    return f"at {tuple(int(j) for j in i)}: {float(got[i])!r}, expected {float(want[i])!r} (tolerance {atol:.3g})"


class _Checker:
    """The properties of one constraint; `tol` is the check's relative tolerance per dtype."""

    def __init__(self, constraint, reference, feasible, factor):
        self.constraint, self.reference, self.feasible = constraint, reference, feasible
        self.factor = factor
        self._built, self._compiled = {}, {}

    def build(self, shape):
        if shape not in self._built:
            c = self.constraint
            self._built[shape] = c(shape) if isinstance(c, per_shape) else c
        return self._built[shape]

    def tol(self, dtype, scale=1.0):
        half = 4 if dtype in HALF else 1
        return self.factor * half * EPS[dtype] * max(1.0, scale)

    def project(self, inp, w, name="shape"):
        """P(w) of a float64 array as a tensor of the input's dtype: `(tensor, rounded w, P(w))`."""
        x = ops.convert_to_tensor(w, dtype=inp.dtype)
        try:
            p = self.build(inp.shape)(x)
        except Exception as error:  # any failure to run is this property's failure
            raise _fail(name, f"calling it raised {type(error).__name__}: {error}", inp) from error
        return x, _to_np(x), p

    def close(self, name, inp, got, want, scale, what, extra=0.0):
        atol = self.tol(inp.dtype, scale) + extra
        if got.shape != want.shape or not np.allclose(got, want, rtol=0, atol=atol):
            detail = f"shapes {got.shape} and {want.shape}"
            if got.shape == want.shape:
                detail = _worst(got, want, atol)
            raise _fail(name, f"{what}, {detail}", inp)

    def eager(self, inp, properties, counts):
        _x, w, p = self.project(inp, inp.values())
        if "shape" in properties:
            if tuple(p.shape) != inp.shape:
                raise _fail("shape", f"P(w) has shape {tuple(p.shape)}", inp)
            counts["shape"] += 1
        if "dtype" in properties:
            got = keras.backend.standardize_dtype(p.dtype)
            if got != inp.dtype:
                raise _fail("dtype", f"P(w) is {got}", inp)
            counts["dtype"] += 1
        pn = _to_np(p)
        if inp.kind == "subnormal":
            # XLA on a CPU (JAX, TensorFlow) flushes subnormals to zero in
            # arithmetic: what P makes of them depends on the backend, so only
            # that they give no NaN or inf is checked.
            properties = [q for q in properties if q in ("shape", "dtype", "finite")]
        if "finite" in properties and np.all(np.isfinite(w)):
            bad = int(np.sum(~np.isfinite(pn)))
            if bad:
                raise _fail("finite", f"{bad} of {pn.size} entries of P(w) are NaN or inf", inp)
            counts["finite"] += 1
        if "feasible" in properties:
            if not bool(self.feasible(pn, self.tol(inp.dtype))):
                raise _fail("feasible", f"feasible(P(w)) is False; P(w) = {_brief(pn)}", inp)
            counts["feasible"] += 1
        if "reference" in properties:
            want = np.asarray(self.reference(w), dtype="float64")
            scale = max(_largest(w), _largest(want))
            self.close("reference", inp, pn, want, scale, "P(w) differs from reference(w)")
            counts["reference"] += 1
        if "idempotent" in properties:
            _, _, pp = self.project(inp, pn, "idempotent")
            what = "P(P(w)) differs from P(w)"
            # P(w) is exact to about eps * |w| (w - mean(w) cancels), and a second
            # call may remove that rounding: the scale is the input's.
            scale = max(_largest(w), _largest(pn))
            self.close("idempotent", inp, _to_np(pp), pn, scale, what)
            counts["idempotent"] += 1
        if "unchanged" in properties:
            z = self.feasible_point(inp, w)
            _, z, pz = self.project(inp, z, "unchanged")
            what = "P(z) moved a feasible z"
            # z, computed from w in float64, is feasible to float64's rounding of w.
            wide = self.tol("float64", _largest(w))
            self.close("unchanged", inp, _to_np(pz), z, _largest(z), what, wide)
            counts["unchanged"] += 1
        if "nonexpansive" in properties or "optimal" in properties:
            self.convex(inp, w, pn, properties, counts)

    def feasible_point(self, inp, w):
        """A feasible weight near `w`: reference(w), else P(w) in float64 when that is checked."""
        if self.reference is not None:
            return np.asarray(self.reference(w), dtype="float64")
        if inp.dtype == "float64":
            return _to_np(self.project(inp, w, "unchanged")[2])
        with float64_enabled():
            wide = dataclasses.replace(inp, dtype="float64")
            return _to_np(self.project(wide, w, "unchanged")[2])

    def convex(self, inp, a, pa, properties, counts):
        other = dataclasses.replace(inp, seed=inp.seed + 1)
        _, b, pb = self.project(inp, other.values() * 2, "nonexpansive")
        pb = _to_np(pb)
        size = math.sqrt(max(a.size, 1))
        if "nonexpansive" in properties:
            scale = max(_largest(a), _largest(b))
            moved, apart = np.linalg.norm(pa - pb), np.linalg.norm(a - b)
            if not moved <= apart + self.tol(inp.dtype, scale) * size:
                message = f"|P(a) - P(b)| = {moved:.6g} > |a - b| = {apart:.6g} for b = {other} * 2"
                raise _fail("nonexpansive", message, inp)
            counts["nonexpansive"] += 1
        if "optimal" in properties:
            z = self.reference(b) if self.reference is not None else pb
            inner = float(np.sum((a - pa) * (z - pa)))
            # P(w) and z are exact to about eps * |w| an entry: the inner product of
            # w - P(w) with their errors is up to eps * |w| * max(|w|, |z|) * n.
            scale = max(1.0, _largest(a), _largest(z))
            bound = self.tol(inp.dtype, _largest(a)) * scale * a.size
            if not inner <= bound:
                message = f"<w - P(w), z - P(w)> = {inner:.6g} > {bound:.3g} for z = P({other} * 2)"
                raise _fail("optimal", message, inp)
            counts["optimal"] += 1

    def compiled(self, inp, properties, counts):
        key = (inp.shape, inp.dtype)
        if key not in self._compiled:
            reset_compiler()  # each constraint from a clean cache (torch's recompile limit)
            c = self.build(inp.shape)
            self._compiled[key] = jit(lambda x: c(x), dynamic=False)
        x, w, p = self.project(inp, inp.values(), "jit")
        before, reasons = graph_break_count(), graph_break_reasons()
        try:
            got = _to_np(self._compiled[key](x))
        except Exception as error:
            raise _fail(
                "jit", f"compiling it raised {type(error).__name__}: {error}", inp
            ) from error
        if "graph_break" in properties:
            breaks = graph_break_count() - before
            if breaks:
                after = graph_break_reasons()
                why = [r for r in after if after[r] != reasons.get(r, 0)]
                message = f"torch.compile broke the graph {breaks} times: {'; '.join(why)}"
                raise _fail("graph_break", message, inp)
            counts["graph_break"] += 1
        if "jit" in properties:
            pn = _to_np(p)
            what = "the compiled P(w) differs from the eager one"
            scale = max(_largest(w), _largest(pn), _largest(got))  # each exact to eps * |w|
            self.close("jit", inp, got, pn, scale, what)
            counts["jit"] += 1

    def empty(self, shape, dtype):
        for zeroed in dict.fromkeys([(0, *shape[1:]), (*shape[:-1], 0)]):
            try:
                out = self.build(shape)(ops.zeros(zeroed, dtype))
            except Exception as error:
                raise _fail("empty", f"a {zeroed} weight raised {_why(error)}") from error
            got = (tuple(out.shape), keras.backend.standardize_dtype(out.dtype))
            if got != (zeroed, dtype):
                raise _fail("empty", f"a {zeroed} {dtype} weight gave {got[0]} {got[1]}")

    def serialization(self, shape):
        c = self.build(shape)
        if not hasattr(c, "get_config"):
            return "a plain function has no config"
        try:
            config = json.loads(json.dumps(keras.saving.serialize_keras_object(c)))
            clone = keras.saving.deserialize_keras_object(config, safe_mode=True)
        except Exception as error:
            raise _fail("serialization", f"its config does not load back: {_why(error)}") from error
        self.same("serialization", c, clone, shape, "the config's")
        model = keras.Sequential([keras.Input((1,)), _Holder(shape, c)])
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.keras")
            try:
                model.save(path)
                loaded = keras.saving.load_model(path, safe_mode=True)
            except Exception as error:
                message = f"a .keras model holding it does not load back: {_why(error)}"
                raise _fail("serialization", message) from error
        self.same("serialization", c, loaded.layers[-1].w.constraint, shape, "the .keras model's")
        return None

    def same(self, name, c, clone, shape, what):
        if type(clone) is not type(c):
            raise _fail(name, f"{what} constraint is a {type(clone).__name__}")
        if _config(clone) != _config(c):
            raise _fail(name, f"{what} config {_config(clone)} differs from {_config(c)}")
        w = ops.convert_to_tensor(Input(shape, "float32", seed=1).values(), "float32")
        if not np.array_equal(_to_np(c(w)), _to_np(clone(w))):
            raise _fail(name, f"{what} constraint gives another P(w)")

    def fit(self, shape, lr=0.1):
        """One compiled SGD step of a loss whose gradient is `d`: the weight must be P(w0 - lr d)."""
        c = self.build(shape)
        w0, d = Input(shape, "float32", seed=2).values(), Input(shape, "float32", seed=3).values()
        layer = _Holder(shape, c, initial=w0, direction=d)
        model = keras.Sequential([keras.Input((1,)), layer])
        model.compile(keras.optimizers.SGD(lr), loss=_output_as_loss, jit_compile=True)
        try:
            model.fit(np.ones((2, 1)), np.zeros((2, 1)), batch_size=2, epochs=1, verbose=0)
        except Exception as error:
            raise _fail("fit", f"a compiled fit() step raised {_why(error)}") from error
        got = _to_np(layer.w.value)
        step = ops.convert_to_tensor(w0.astype("float32") - np.float32(lr) * d.astype("float32"))
        want = _to_np(c(step))
        inp = Input(shape, "float32", seed=2)
        self.close("fit", inp, got, want, _largest(want), "the weight after one step is not P(w)")


def _output_as_loss(y_true, y_pred):
    return ops.mean(y_pred)


@keras.saving.register_keras_serializable(package="kconstraints.testing")
class _Holder(keras.layers.Layer):
    """A layer with one weight `w` under the constraint; its output, sum(w * d), is its loss."""

    def __init__(self, shape, constraint, initial=None, direction=None, **kwargs):
        super().__init__(**kwargs)
        self.shape, self.constraint = tuple(shape), keras.constraints.get(constraint)
        zeros = np.zeros(self.shape)
        initial = zeros if initial is None else initial
        direction = zeros if direction is None else direction
        self.w = self.add_weight(
            shape=self.shape,
            initializer=keras.initializers.Constant(initial),
            constraint=self.constraint,
            name="w",
        )
        self.d = self.add_weight(
            shape=self.shape,
            initializer=keras.initializers.Constant(direction),
            trainable=False,
            name="d",
        )

    def call(self, x):
        return x[:, :1] * 0 + ops.sum(self.w * self.d)

    def get_config(self):
        config = super().get_config()
        config.update(
            shape=list(self.shape), constraint=keras.saving.serialize_keras_object(self.constraint)
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["constraint"] = keras.saving.deserialize_keras_object(config["constraint"])
        return cls(**config)


def _config(c):
    return json.loads(json.dumps(keras.saving.serialize_keras_object(c)))


def _why(error):
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def _brief(a):
    flat = a.ravel()
    shown = ", ".join(f"{v:.6g}" for v in flat[:6])
    return f"[{shown}{', ...' if flat.size > 6 else ''}] (sum {np.sum(a):.8g})"


def _name(constraint):
    if isinstance(constraint, per_shape):
        return f"per_shape({constraint.__name__})"
    if (
        callable(constraint)
        and hasattr(constraint, "__name__")
        and not hasattr(constraint, "get_config")
    ):
        return constraint.__name__
    return repr(constraint)


def _selected(properties, reference, feasible, convex):
    """The properties to check, and why each other one is not."""
    unknown = [p for p in properties or () if p not in PROPERTIES]
    if unknown:
        raise ValueError(f"properties: unknown {unknown}; the properties are {list(PROPERTIES)}.")
    chosen = list(PROPERTIES if properties is None else properties)
    skipped = {}
    needs = {"reference": reference, "feasible": feasible}
    for name, given in needs.items():
        if name in chosen and given is None:
            chosen.remove(name)
            skipped[name] = f"no `{name}` given"
    if not convex:
        for name in CONVEX:
            if name in chosen:
                chosen.remove(name)
                skipped[name] = "not a convex set (convex=False)"
    if not graph_breaks_possible() and "graph_break" in chosen:
        chosen.remove("graph_break")
        skipped["graph_break"] = f"{keras.backend.backend()} compiles a function whole or fails"
    return chosen, skipped


def check_constraint(
    constraint,
    shape,
    *,
    reference=None,
    feasible=None,
    convex=False,
    dtypes=DTYPES,
    examples=20,
    shapes=None,
    properties=None,
    kinds=tuple(KINDS),
    exponents=EXPONENTS,
    factor=64,
    seed=0,
):
    """Check a constraint's properties on the active Keras backend; raise on the first failure.

    Args:
        constraint: the constraint: a kconstraints or `keras.constraints`
            constraint, a plain function `w -> P(w)`, or `per_shape(make)`
            for one built per weight shape.
        shape: the weight shape to try.
        reference: `reference(w) -> P(w)`, the exact result as float64 NumPy.
        feasible: `feasible(p, tol) -> bool`: whether `p` (float64 NumPy) is
            in the set, to a relative tolerance `tol` of the dtype tried.
        convex: the set is convex and `constraint` its nearest-point
            projection: checks `nonexpansive` and `optimal`.
        dtypes: the weight dtypes to try.
        examples: generated inputs per dtype (the compiled properties try a
            fifth as many); raise it for a longer hunt.
        shapes: the shapes to try; default `shape`, and for a `per_shape`
            factory also `varied_shapes(shape)`.
        properties: the names in `PROPERTIES` to check (default: all that apply).
        kinds, exponents: the inputs' kinds (`KINDS`) and decimal scales.
        factor: tolerances are `factor * eps(dtype) * max(1, |value|)`.
        seed: hypothesis's seed: the same seed tries the same inputs.

    Returns:
        A `Report`: per property, the inputs it held on, or why it was not checked.

    Raises:
        AssertionError: `"<property>: <what was wrong>\\n  input: <the smallest failing input>"`.
    """
    import hypothesis

    chosen, skipped = _selected(properties, reference, feasible, convex)
    if shapes is None:
        shapes = varied_shapes(shape) if isinstance(constraint, per_shape) else [tuple(shape)]
    shapes = [tuple(s) for s in shapes]
    checker = _Checker(constraint, reference, feasible, factor)
    counts = dict.fromkeys(chosen, 0)

    def hunt(run, wanted, dtype, budget):
        """Run `run(inp, chosen, tried)` on `budget` generated inputs of `dtype`."""
        if not any(p in chosen for p in wanted):
            return
        tried = dict.fromkeys(chosen, 0)
        settings = hypothesis.settings(
            max_examples=budget,
            database=None,  # the same inputs on every run, nothing written to disk
            deadline=None,
            report_multiple_bugs=False,  # the first failure, shrunk
            suppress_health_check=list(hypothesis.HealthCheck),
            print_blob=False,
            # No "explain" phase: its list of lines run only by failing inputs
            # points into this module, not into the constraint.
            phases=[p for p in hypothesis.Phase if p.name != "explain"],
        )

        @hypothesis.seed(seed)
        @settings
        @hypothesis.given(strategy(shapes, dtype, kinds, exponents))
        def one(inp):
            run(inp, chosen, tried)

        with float64_enabled() if dtype == "float64" else contextlib.nullcontext():
            try:
                one()
            except hypothesis.errors.Flaky as flaky:
                # A failure seen once: torch counts a graph break when it compiles,
                # not when it replays; a constraint may keep state. It is a failure.
                first = [e for e in getattr(flaky, "exceptions", ()) if _ours(e)]
                if not first:
                    raise
                raise first[0] from None
        for p in wanted:  # a passing run made no shrinking calls
            if p in counts:
                counts[p] += tried[p]

    for dtype in dtypes:
        if dtype not in DTYPES:
            raise ValueError(f"dtypes: each must be one of {list(DTYPES)}, got {dtype!r}.")
        hunt(checker.eager, EAGER + CONVEX, dtype, examples)
        hunt(checker.compiled, COMPILED, dtype, max(1, examples // 5))
        if "empty" in chosen:
            with float64_enabled() if dtype == "float64" else contextlib.nullcontext():
                checker.empty(shapes[0], dtype)
            counts["empty"] += 1
    if "serialization" in chosen:
        why = checker.serialization(shapes[0])
        if why:
            chosen.remove("serialization")
            counts.pop("serialization")
            skipped["serialization"] = why
        else:
            counts["serialization"] += 1
    if "fit" in chosen:
        checker.fit(shapes[0])
        counts["fit"] += 1
    report = Report(_name(constraint), keras.backend.backend(), shapes, tuple(dtypes))
    report.inputs = {p: counts[p] for p in PROPERTIES if p in counts}
    report.skipped = skipped
    return report
