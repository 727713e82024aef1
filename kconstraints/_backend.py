"""The package's only backend-specific code, and every fact it relies on that a release may change.

Everything else in kconstraints is written in `keras.ops` alone, and names
no version. What Keras, JAX, TensorFlow or torch do that the package has to
work around is written here once: what happens, why it matters, where the
workaround lives, and the versions it was verified on. When a new release
changes one of these, this file says what to look at.

Verified on: Keras 3.15.1, JAX 0.10.2, TensorFlow 2.21.0, torch 2.13.0 (CPU).
"""

from __future__ import annotations

import contextlib

import keras
from keras import ops

# Facts the rest of the package works around in plain `keras.ops`:
#
# - Float64 promotion. Keras 3.15 promotes the operands of binary ops
#   (`ops.maximum`, `ops.minimum`, `ops.clip`) through
#   `keras.backend.result_type`, which maps float64 to float32, so
#   `ops.maximum(a, a)` of a float64 torch tensor is float32. On torch,
#   `ops.matmul` and `ops.cumsum` of float64 give float32 the same way; on
#   JAX, `ops.mean` reduces float64 in float32. So projections use Python
#   operators, `@` and `ops.where` (`_tensors.clamp`), a dtype-keeping scan
#   (`_tensors.cumsum_last`), and a sum divided by a count for means.
# - NumPy constants under torch.compile. Dynamo (torch 2.13) can not trace
#   Keras's conversion of a NumPy array (it does not read `ndarray.dtype`),
#   so each conversion inside a compiled step was a graph break: 6 for a
#   `Clip` with two array bounds. `_tensors.Constant` converts once, outside
#   any trace. Likewise a Python generator inside a traced function breaks
#   the graph; the package passes lists.
# - Boolean masks on torch's CPU kernels. torch 2.13 reads a 1-byte mask
#   (bool or int8) one entry at a time: at 1e6 entries on 2 cores, compiled,
#   a `where` on a random boolean mask took 2.2 ms, on a float16 0/1 mask
#   0.09 ms (a copy: 0.07 ms). JAX and TensorFlow (XLA) read both alike.
#   Masks are kept as float16 0/1 tensors (`masked._Masked`).
# - TensorFlow variables. On TensorFlow 2.21 a Keras variable's `.value` is a
#   `tf.Variable`; it passes through `convert_to_tensor` and `cast`
#   unchanged and `keras.ops.svd` rejects it. The matrix constraints always
#   reshape first, which makes a tensor (`_linalg.as_matrices`).
# - Decompositions of non-finite matrices. torch 2.13's `linalg.svd` and
#   `linalg.eigh`, and TensorFlow 2.21's `eigh`, raise on a matrix holding a
#   NaN or an infinity (torch names the batch element; JAX returns NaN). The
#   matrix constraints decompose finite matrices only (`_linalg.finite_only`).
# - `keras.Variable(..., constraint=c)` accepts the keyword and drops it
#   (Keras 3.15 swallows unknown keywords): `variables.Variable` and
#   `variables.constrain` set the attribute the optimizer reads.
# - The order of `fit()`'s last calls. In Keras 3.15, on JAX, TensorFlow and
#   torch alike, `fit()` calls `optimizer.finalize_variable_values()` (the
#   moving average of `use_ema=True` written over the weights) before
#   `on_train_end`, so `callbacks.EnforceConstraints` projects last.
#   `tests/test_callbacks.py` checks this order on every backend.
# - Batched matmul on TensorFlow's CPU. TensorFlow 2.21 with oneDNN (its
#   default on x86) returned inf for the N-d by 2-d products of
#   `conv_norm_bound` on a (3, 3, 1, 4) kernel in eager mode, then aborted
#   the process ("free(): invalid size");
#   with TF_ENABLE_ONEDNN_OPTS=0 it was right. `lipschitz._dft_axis`
#   multiplies 2-d matrices only.
# - Trigonometry in float64 on JAX. `keras.ops.cos` and `ops.sin` return
#   float32 for a float64 input (Keras 3.15, JAX 0.10.2), so
#   `lipschitz._cos_sin` evaluates a float64 series instead.
# - `ops.max` on torch. Keras 3.15's torch `max` reads `.values` of torch's
#   result, which Dynamo (torch 2.13) can not trace inside a compiled train
#   step: a graph break. The package uses `ops.amax`.
# - Layouts on XLA's CPU backend (JAX 0.10.2, TensorFlow 2.21). A transposed
#   view is not copied: a reduction over it reads with a stride (12 Michelot
#   passes over the slices of a (4096, 1024) kernel along axis 0: 798 ms
#   after moving them to rows, 91 ms reducing over axis 0 in place), and a
#   transposed 1024 x 1024 matrix times a vector took 1.83 ms against 0.14 ms
#   for the same product written as a row times the matrix. XLA also fuses
#   a masked copy of a weight (`_linalg.finite_only`) into each matvec that
#   reads it, which loses the fast kernel (TensorFlow: 8 power steps on a
#   1024 x 1024 kernel took 19.9 ms with the copy, 1.8 ms without). So
#   `_kernels.michelot_threshold` reduces over the slice axes where they lie, and
#   `_linalg.power_estimate` computes `W^T u` as `u^T W` on the kernel itself.
# - Gradient accumulation. With `gradient_accumulation_steps=n`, Keras 3.15
#   applies `variable.constraint` after every micro-step, not once per update.
# - Loops called eagerly on JAX. `jax.lax.while_loop` and `fori_loop` run
#   outside a trace compile their loop, and cache it by the identity of the
#   cond and body functions. Keras 3.15's JAX `ops.while_loop` wraps them in
#   new closures at every call, and the package's loop bodies are closures or
#   bound methods made at each call too, so an eager projection recompiled
#   its loops at every call (JAX 0.10.2, 2-core CPU, a (256, 64) kernel:
#   `Simplex` 180 ms a call, `L1Ball` 200 ms, `Monotonic` 740 ms; 0.1, 0.1
#   and 2 ms compiled). `Constraint.__call__` projects through
#   `eager_compiled`, one `jax.jit` per constraint object.
# - Python attributes under torch.compile. Dynamo (torch 2.13) guards on
#   every Python number a compiled step reads: a `TopK`'s `density` became a
#   guard `density == 0.1000...`, so each change of a `SparsitySchedule`
#   recompiled the frame after Keras's `loss.backward()` graph break (the
#   optimizer's update and the constraints), about 15 s each for the guide's
#   MLP on a 2-core CPU. The graphs of the old values stay in the cache and
#   count toward `torch._dynamo.config.recompile_limit` (8): the first
#   shapes, the partial last batch and six changes reached it, and the step
#   ran eagerly from then on (fine-tuning 21 s instead of 0.6 s, loaded machine). So on torch
#   the schedule keeps its density in a variable that the compiled step reads
#   (`schedule_as_data`), and a change is new data, not a new graph; on JAX
#   and TensorFlow a change retraces once (`top_k` needs a static `k`).


def cond(pred, true_fn, false_fn, operands):
    """`keras.ops.cond` of `fn(*operands)`, except on torch, where it is `torch.cond`.

    On torch, `keras.ops.cond` is a Python `if` on the tensor: torch.compile
    breaks the graph there, and inside the optimizer's update (a no-grad
    context) it then gives up and runs the whole update eagerly. Worse,
    `keras.ops.cond` names a new Keras `Operation` at every call and
    torch.compile guards on Keras's global name counter, so every call
    recompiled (Keras 3.15, torch 2.13). `torch.cond` traces both branches
    into one graph; eager torch runs a Python branch, which costs nothing
    there. The branches take every value as a tensor operand, because
    torch.compile may turn a captured Python float into a symbolic one,
    which `torch.cond` refuses.
    """
    if keras.backend.backend() == "torch":
        import torch

        if not torch.compiler.is_compiling():
            return true_fn(*operands) if bool(pred) else false_fn(*operands)
        # A constraint is not differentiated (Penalty stops its gradient), and
        # torch.cond on inputs that require grad fails inside Dynamo.
        operands = tuple(ops.stop_gradient(o) for o in operands)
        return torch.cond(pred, true_fn, false_fn, operands)
    return ops.cond(pred, lambda: true_fn(*operands), lambda: false_fn(*operands))


def fori_loop(lower, upper, body, state):
    """`keras.ops.fori_loop(lower, upper, body, state)`, kept one loop under torch.compile.

    On torch, Keras 3.15's `fori_loop` is a Python loop, which Dynamo
    unrolls: compile time grows with the trip count (torch 2.13, loaded
    2-core CPU: `Monotonic` on slices of 1024, whose searches are loops,
    took about 650 s to compile; `DoublyStochastic` with 50 sweeps 108 s).
    While compiling, the loop is `torch._higher_order_ops.while_loop`
    instead (verified on torch 2.13: one loop in the graph, no graph break);
    eager torch runs the Python loop, which costs nothing there. `state` is
    a tensor or a tuple of tensors; `body(i, state)` gets `i` as a 0-d
    tensor on every backend when compiled, and its results are cast back to
    the dtypes of `state` and copied (`while_loop` refuses a body that
    changes a dtype or returns an input as it is). The tensors `body` closes
    over must not be views of one another (`while_loop` refuses aliasing
    there too): copy them first.
    """
    if torch_compiling():
        import torch

        def pack(carried):
            return keras.tree.pack_sequence_as(state, list(carried))

        def step(i, *carried):
            return (i + 1, *keras.tree.flatten(body(i, pack(carried))))

        end = torch.as_tensor(upper, dtype=torch.int64)
        start = (torch.as_tensor(lower, dtype=torch.int64), *keras.tree.flatten(state))
        return pack(_torch_while_loop(lambda i, *_: i < end, step, start)[1:])
    return ops.fori_loop(lower, upper, body, state)


def while_loop(keep_going, body, state):
    """`keras.ops.while_loop(keep_going, body, state)`, kept one loop under torch.compile.

    `state` is a tuple of tensors; `keep_going(*state)` returns a boolean
    0-d tensor and `body(*state)` the next state. On torch, Keras 3.15's
    `while_loop` is a Python loop on that tensor: torch.compile breaks the
    graph at each test. While compiling it is torch's `while_loop` instead,
    as in `fori_loop` (same rules for the body); eager torch runs the Python
    loop.
    """
    if torch_compiling():
        return _torch_while_loop(keep_going, body, state)
    return ops.while_loop(keep_going, body, state)


def solve(a, b):
    """`keras.ops.solve(a, b)` for a batch of systems, none raising on a singular one.

    JAX and TensorFlow return inf or NaN for a singular matrix; torch's
    `linalg.solve`, which Keras 3.15 calls, raises (torch 2.13), in the
    middle of a compiled train step for one slice's system.
    `torch.linalg.solve_ex` returns the LU result and an error code instead.
    """
    if keras.backend.backend() == "torch":
        import torch

        return torch.linalg.solve_ex(a, b)[0]
    return ops.solve(a, b)


def torch_compiling():
    """True inside a function that torch.compile is tracing; always False on JAX and TensorFlow."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    return torch.compiler.is_compiling()


def schedule_as_data():
    """True where a schedule's value must reach the compiled step as a variable: torch (see above)."""
    return keras.backend.backend() == "torch"


def _torch_while_loop(keep_going, body, state):
    """torch's `while_loop` on a tuple of tensors (torch 2.13: one loop in the graph, no break).

    `keep_going` and `body` take the tensors as separate arguments.
    `keep_going` must not call `keras.tree` on them: Dynamo failed to trace
    its `is not` inside the loop's condition (torch 2.13); `body` may.
    """
    import torch
    from torch._higher_order_ops.while_loop import while_loop

    def fresh(t):  # a new tensor with standard strides, as while_loop wants
        return torch.clone(t, memory_format=torch.contiguous_format)

    def step(*carried):
        pairs = zip(body(*carried), carried, strict=True)
        return tuple(fresh(ops.cast(o, c.dtype)) for o, c in pairs)

    return while_loop(keep_going, step, tuple(fresh(ops.stop_gradient(t)) for t in state))


EAGER_CACHE = "_eager_compiled"


def eager_compiled(owner, project, w, version=None):
    """`project(w)`; called eagerly on JAX, through one `jax.jit` of `project` kept on `owner`.

    Outside a trace, JAX compiles each loop of a projection again at every
    call (see the note above): `jax.jit(project)` compiles the projection
    once per shape and dtype of `w` and then only runs it (jit's own cache
    keys on those, and on the x64 mode). Inside a trace (`w` a
    `jax.core.Tracer`: jit, grad, vmap, a compiled train step), and on the
    other backends, whose eager loops are Python loops, it is `project(w)`.
    The compiled function reads `owner`'s attributes when it traces, so it is
    kept, in `owner.__dict__[EAGER_CACHE]`, with `version()` (anything
    comparable, read at every eager call) and Keras's `floatx`, and traced
    again when either changes; an owner that must not carry it when copied
    leaves it out. A `project` that reads values in Python (which jit can not
    trace) runs eagerly, as it did, from then on for this `version()`.
    Exceptions `project` raises come out as they are (jit re-raises them).
    """
    if keras.backend.backend() != "jax":
        return project(w)
    import jax

    if isinstance(w, jax.core.Tracer):
        return project(w)
    key = (version() if version is not None else None, keras.backend.floatx())
    cached = owner.__dict__.get(EAGER_CACHE)
    if cached is None or cached[0] != key:
        cached = owner.__dict__[EAGER_CACHE] = (key, jax.jit(project))
    if cached[1] is None:
        return project(w)
    try:
        return cached[1](w)
    except _untraceable(jax):
        owner.__dict__[EAGER_CACHE] = (key, None)
        return project(w)


def _untraceable(jax):
    """The errors of a function that reads a traced value in Python (JAX 0.10.2's names)."""
    errors = jax.errors
    return (
        errors.ConcretizationTypeError,  # bool() of a value, and what reads one concretely
        errors.NonConcreteBooleanIndexError,
        errors.TracerArrayConversionError,  # np.asarray of a value
        errors.TracerIntegerConversionError,  # int() of a value, or a value as an index
    )


def sync_training_state(layer):
    """Make a layer's variables current when JAX's trainer holds the live weights.

    On JAX, `fit()` keeps the live weights in its own state (the variables
    hold none meanwhile) and writes that state back at the end of each
    epoch, over whatever was assigned. `jax_state_sync` makes the variables
    current and tells the trainer to read them back before its next step,
    so a projection made mid-epoch lands. Keras's `Callback.model` syncs
    too, but a model or layer held otherwise does not. The method exists on
    JAX models only (Keras 3.15); elsewhere this does nothing.
    """
    sync = getattr(layer, "jax_state_sync", None)
    if callable(sync):
        sync()


def after_each_step(owner, optimizer, fn):
    """Call `fn()` after every `optimizer.step()` of a torch optimizer; return torch's handle.

    A torch training loop (a Keras model on the torch backend, often wrapped
    in `DistributedDataParallel`, stepped by a `torch.optim` optimizer, as in
    Keras's guide to multi-GPU training with PyTorch) never runs Keras's
    optimizer, the one place Keras applies `variable.constraint`.
    `torch.optim.Optimizer.register_step_post_hook` (torch 2.0 and later;
    verified on torch 2.13) runs a hook after each `step()` and returns a
    handle whose `remove()` unregisters it. The optimizer is recognised by
    that method, not by its class, so torch need not be imported here.
    """
    register = getattr(optimizer, "register_step_post_hook", None)
    if not callable(register):
        kind = type(optimizer)
        raise TypeError(
            f"{owner}: `optimizer` must be a torch optimizer (a torch.optim.Optimizer, which "
            f"has register_step_post_hook), got {kind.__name__} from {kind.__module__}. "
            "A Keras optimizer needs no hook: it applies each variable's constraint itself "
            "after every update."
        )
    return register(lambda _optimizer, _args, _kwargs: fn())


# ------------------------------------------ compilers, for `kconstraints.testing`


def jit(fn, *, fullgraph=False, dynamic=None):
    """`fn` compiled by the backend's compiler: `jax.jit`, TF XLA or `torch.compile`.

    JAX jit and TF XLA always trace a function whole. torch.compile falls
    back to eager Python at a graph break, silently, unless `fullgraph=True`
    (`graph_break_count` counts them); `dynamic=False` keeps its shapes
    static, as XLA's are.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    import torch

    return torch.compile(fn, fullgraph=fullgraph, dynamic=dynamic)


def graph_breaks_possible():
    """True where the compiler may split a function at a graph break: torch.compile.

    JAX's jit and TensorFlow's XLA trace a function whole or fail.
    """
    return keras.backend.backend() == "torch"


def graph_break_count():
    """The graph breaks torch.compile has met in this process so far; always 0 elsewhere.

    Code after a break runs as Python, and where it repeats a frame per
    constraint it counts toward Dynamo's recompile limit. JAX and TensorFlow
    trace the whole function or fail.
    """
    return sum(graph_break_reasons().values())


def graph_break_reasons():
    """torch.compile's graph breaks so far, by the reason it gives: `{reason: count}`."""
    if keras.backend.backend() != "torch":
        return {}
    from torch._dynamo.utils import counters

    return dict(counters["graph_break"])


def reset_compiler():
    """Forget every compiled torch graph (a no-op on JAX and TensorFlow).

    torch.compile keeps at most 8 graphs of one function's code (its
    recompile limit) and then runs it eagerly, silently: a check that
    compiles many constraints starts each one from a clean cache.
    """
    if keras.backend.backend() == "torch":
        import torch

        torch._dynamo.reset()


@contextlib.contextmanager
def float64_enabled():
    """JAX truncates float64 to float32 unless x64 mode is on: switch it on here."""
    if keras.backend.backend() != "jax":
        yield
        return
    import jax

    old = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)
