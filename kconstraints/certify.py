"""A certified upper bound on the Lipschitz constant of a whole Keras model, from its weights.

`lipschitz_bound(model)` bounds `||f(a) - f(b)|| <= L ||a - b||` in the L2
norm, for one sample at inference (Dropout and noise layers off,
BatchNormalization with its moving statistics), whatever constrained or not
the weights are. `layer_lipschitz_bounds(model)` gives each layer's own
constant. Both read the weights once, eagerly, in float64 NumPy, and return
Python floats; they are not for use inside a compiled step.

How a model's bound is composed. Each tensor of the graph gets a bound on the
Lipschitz constant of the map from the model's input (all of its inputs,
concatenated) to that tensor. A model input has 1. A layer with one input
multiplies its input's bound by its own constant (the layer's activation
included). Because every bound is taken against the same model input, two
branches of one input recombine soundly, with no double counting to fear:

- `Add`, `Subtract`: the sum of the inputs' bounds, `L_f + L_g`
  (triangle inequality); `Average`: that sum over the number of inputs.
- `Concatenate`, `Maximum`, `Minimum`: `sqrt(L_f**2 + L_g**2)`, since
  `||(f(a) - f(b), g(a) - g(b))||**2 <= (L_f**2 + L_g**2) ||a - b||**2`
  (for the elementwise max and min, each entry moves by at most the larger
  of the two entries' moves).
- An input broadcast by a merge (shape 1 against n) counts `sqrt(n)` times.
- Any other layer with several inputs (a nested model): its constant,
  taken against its inputs concatenated, times `sqrt(sum L_i**2)`.

A model with several outputs is bounded as the concatenation of its outputs.
A layer or activation the module does not know is an error naming it; it
never guesses. The bounds per layer are documented on `layer_lipschitz_bounds`.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from kconstraints._checks import check_model
from kconstraints._constants import FLOAT64_NORM_MARGIN
from kconstraints._grid import conv_grid

__all__ = ["layer_lipschitz_bounds", "lipschitz_bound"]

# The frequency grid of the convolution bound is fine enough that it loses at
# most this factor (see `_conv_bound`).
_GRID_TOLERANCE = 0.002

# The largest |f'(x)| of each activation, rounded up in the last digit. For the
# smooth ones (the argument is where the derivative peaks): gelu, exact
# (x = sqrt(2): Phi(sqrt 2) + sqrt(2) phi(sqrt 2) = 1.128904) and tanh form
# (1.128993); silu/swish x sigmoid(x) (x = 2.3994: 1.099839); mish
# x tanh(softplus x) (x = 1.4906: 1.088498); selu scale * alpha for x -> 0-;
# hard_silu x relu6(x + 3) / 6 ((2x + 3) / 6 at x = 3: 1.5); hard_sigmoid
# relu6(x + 3) / 6: 1/6. softmax is 1-Lipschitz in L2 (Gao and Pavel 2017,
# "On the properties of the softmax function", Prop. 4). tests/test_certify.py
# checks every constant against a finite-difference maximum of the derivative.
_ACTIVATION_CONSTANTS = {
    "linear": 1.0,
    "relu": 1.0,
    "relu6": 1.0,
    "leaky_relu": 1.0,  # default negative_slope 0.2
    "elu": 1.0,  # default alpha 1.0
    "celu": 1.0,  # default alpha 1.0: exp(x / alpha) for x < 0
    "selu": 1.7581,  # 1.0507009873554805 * 1.6732632423543772 = 1.75809934
    "tanh": 1.0,
    "hard_tanh": 1.0,
    "tanh_shrink": 1.0,  # x - tanh(x): slope tanh(x)**2 <= 1
    "soft_shrink": 1.0,
    "sigmoid": 0.25,
    "hard_sigmoid": 1.0 / 6.0,
    "log_sigmoid": 1.0,
    "softplus": 1.0,
    "softsign": 1.0,
    "sparse_plus": 1.0,
    "squareplus": 1.0,
    "gelu": 1.12900,
    "silu": 1.09984,
    "swish": 1.09984,
    "mish": 1.08850,
    "hard_silu": 1.5,
    "hard_swish": 1.5,
    "softmax": 1.0,
}


def _activation_functions():
    return {
        getattr(keras.activations, name): constant
        for name, constant in _ACTIVATION_CONSTANTS.items()
        if hasattr(keras.activations, name)
    }


def _activation_bound(activation, where):
    if activation is None:
        return 1.0
    if isinstance(activation, keras.layers.Layer):
        return _own_bound(activation, [], None)
    constant = _activation_functions().get(activation)
    if constant is None:
        name = getattr(activation, "__name__", repr(activation))
        raise ValueError(
            f"lipschitz_bound: {where} has the activation {name!r}, whose Lipschitz "
            f"constant is not known here (known: {sorted(_ACTIVATION_CONSTANTS)})."
        )
    return constant


# ------------------------------------------------------------ linear operators


def _numpy(weight):
    return np.asarray(keras.ops.convert_to_numpy(weight), dtype="float64")


def _matrix_norm(matrix):
    """The spectral norm of a matrix, by a float64 SVD, rounded up."""
    if matrix.size == 0:
        return 0.0
    return float(np.linalg.norm(matrix, 2)) * (1 + FLOAT64_NORM_MARGIN)


def _conv_bound(kernel):
    """A certified bound of the zero-padded convolution with a `(*spatial, in, out)` kernel.

    With zero padding, the convolution of an input of any size keeps some
    outputs of the convolution on the infinite grid, and so does any stride,
    padding or cropping; a transposed convolution is the adjoint of one. So
    all are bounded by that operator's norm, `S = sup_w sigma_1(K(w))`, the
    largest singular value of the kernel's symbol `K(w) = sum_t K[t] e^{-i w.t}`
    over all frequencies (the operator is a Fourier multiplier).

    Computed here in float64 NumPy: `K` on the frequency grid of
    `lipschitz.conv_norm_bound` (`_grid.conv_grid`; the Bernstein bound of
    Delattre, Barthelemy & Allauzen 2024 between grid points is derived in
    the `lipschitz` module docstring) by an FFT, `sigma_1` at each point by
    an SVD, times the grid's factor, which stays below `1 + _GRID_TOLERANCE`
    (four times that for a 3D kernel). (`conv_norm_bound` bounds the same `S`
    with Gram iteration in the weights' dtype, for use inside a train step;
    a certificate read once, eagerly, can afford float64 SVDs.)
    """
    spatial = kernel.shape[:-2]
    active = [k for k in spatial if k > 1]
    if not active:
        return _matrix_norm(kernel.reshape(kernel.shape[-2:]))
    # Three active axes: a coarser grid, or it holds about a million points.
    tolerance = _GRID_TOLERANCE * (4 if len(active) > 2 else 1)
    sizes, factor = conv_grid(spatial, tolerance)  # each size >= its axis's taps: the FFT keeps all
    symbol = np.fft.fftn(kernel, s=sizes, axes=tuple(range(len(spatial))))
    sigma = np.linalg.svd(symbol.reshape(-1, *kernel.shape[-2:]), compute_uv=False)[:, 0]
    return float(np.max(sigma)) * factor * (1 + FLOAT64_NORM_MARGIN)


def _dilate(kernel, dilation):
    """The kernel with `dilation - 1` zeros between taps: the same convolution, undilated."""
    if all(d == 1 for d in dilation):
        return kernel
    spatial = kernel.shape[:-2]
    shape = tuple((k - 1) * d + 1 for k, d in zip(spatial, dilation, strict=True))
    out = np.zeros(shape + kernel.shape[-2:])
    out[tuple(slice(None, None, d) for d in dilation)] = kernel
    return out


def _grouped_conv_bound(kernel, groups):
    """Groups act on disjoint channels: the operator is block diagonal, its norm the largest."""
    if groups == 1:
        return _conv_bound(kernel)
    per_group = kernel.shape[-1] // groups
    return max(_conv_bound(kernel[..., g * per_group : (g + 1) * per_group]) for g in range(groups))


def _depthwise_bound(kernel):
    """Depthwise `(*spatial, channels, multiplier)`: one group per input channel."""
    return max(_conv_bound(kernel[..., c : c + 1, :]) for c in range(kernel.shape[-2]))


def _tuple(value, rank):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * rank


def _pool_overlap(layer):
    """The most windows one input entry falls in: prod(ceil(pool / stride))."""
    pool = layer.pool_size
    strides = layer.strides if layer.strides is not None else pool
    rank = len(pool) if isinstance(pool, (tuple, list)) else 1
    pool, strides = _tuple(pool, rank), _tuple(strides, rank)
    return math.prod(-(-p // s) for p, s in zip(pool, strides, strict=True)), math.prod(pool)


def _spatial_size(shape, data_format):
    if shape is None:
        return None
    spatial = shape[2:] if data_format == "channels_first" else shape[1:-1]
    return None if any(d is None for d in spatial) else math.prod(spatial)


# ------------------------------------------------------------ one layer


def _layer_name(layer):
    return f"layer {layer.name!r} ({type(layer).__name__})"


def _own_bound(layer, input_shapes, output_shape):
    """The Lipschitz constant of one layer, from its inputs (concatenated) to its output."""
    L = keras.layers
    where = _layer_name(layer)
    if isinstance(layer, keras.Model):
        return lipschitz_bound(layer)
    if not layer.built:
        raise ValueError(f"lipschitz_bound: {where} is not built; call the model once first.")
    if isinstance(layer, L.Dense):
        bound = _matrix_norm(_numpy(layer.kernel))
        return bound * _activation_bound(layer.activation, where)
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        depthwise = _dilate(_numpy(layer.depthwise_kernel), _tuple(layer.dilation_rate, layer.rank))
        pointwise = _numpy(layer.pointwise_kernel)
        bound = _depthwise_bound(depthwise) * _matrix_norm(pointwise.reshape(pointwise.shape[-2:]))
        return bound * _activation_bound(layer.activation, where)
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        kernel = _dilate(_numpy(layer.kernel), _tuple(layer.dilation_rate, layer.rank))
        return _depthwise_bound(kernel) * _activation_bound(layer.activation, where)
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        # The kernel `(*spatial, filters, in)` is the kernel of the convolution
        # this layer is the adjoint of; an operator and its adjoint share a norm.
        kernel = _dilate(_numpy(layer.kernel), _tuple(layer.dilation_rate, layer.rank))
        return _conv_bound(kernel) * _activation_bound(layer.activation, where)
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        kernel = _dilate(_numpy(layer.kernel), _tuple(layer.dilation_rate, layer.rank))
        bound = _grouped_conv_bound(kernel, layer.groups)
        return bound * _activation_bound(layer.activation, where)
    if isinstance(layer, L.BatchNormalization):
        # At inference: gamma * (x - mean) / sqrt(var + eps) + beta, per channel.
        scale = 1.0 / np.sqrt(_numpy(layer.moving_variance) + layer.epsilon)
        if layer.scale:
            scale = scale * _numpy(layer.gamma)
        return float(np.max(np.abs(scale))) * (1 + FLOAT64_NORM_MARGIN)
    if isinstance(layer, (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D)):
        # |max(a_w) - max(b_w)| <= ||a_w - b_w||: summing over windows counts
        # each entry once per window that holds it.
        overlap, _ = _pool_overlap(layer)
        return math.sqrt(overlap)
    if isinstance(layer, (L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D)):
        # Cauchy-Schwarz: mean(a_w)**2 <= sum(a_w**2) / |w|. A "valid" window
        # holds prod(pool) entries; a "same" one at the border may hold fewer
        # (at least 1), hence the cruder bound there.
        overlap, size = _pool_overlap(layer)
        return math.sqrt(overlap / size) if layer.padding == "valid" else math.sqrt(overlap)
    if isinstance(layer, (L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D)):
        return 1.0
    if isinstance(
        layer, (L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D)
    ):
        size = _spatial_size(input_shapes[0] if input_shapes else None, layer.data_format)
        return 1.0 if size is None else 1.0 / math.sqrt(size)
    if isinstance(layer, L.Activation):
        return _activation_bound(layer.activation, where)
    if isinstance(layer, L.ReLU):
        if layer.threshold != 0:
            raise ValueError(
                f"lipschitz_bound: {where} has threshold={layer.threshold}: it jumps "
                "there and has no Lipschitz constant."
            )
        return max(1.0, abs(float(layer.negative_slope)))
    if isinstance(layer, L.LeakyReLU):
        return max(1.0, abs(float(layer.negative_slope)))
    if isinstance(layer, L.ELU):
        return max(1.0, abs(float(layer.alpha)))
    if isinstance(layer, L.PReLU):
        return max(1.0, float(np.max(np.abs(_numpy(layer.alpha)))))
    if isinstance(layer, L.Softmax):
        return 1.0
    if isinstance(layer, L.Rescaling):
        return float(np.max(np.abs(np.asarray(layer.scale, dtype="float64"))))
    if isinstance(layer, (L.UpSampling1D, L.UpSampling2D, L.UpSampling3D)):
        if getattr(layer, "interpolation", "nearest") != "nearest":
            raise ValueError(
                f"lipschitz_bound: {where} interpolates {layer.interpolation!r}; only "
                "'nearest' (each entry copied prod(size) times) is bounded."
            )
        size = layer.size if isinstance(layer, L.UpSampling1D) else math.prod(layer.size)
        return math.sqrt(size)
    if isinstance(layer, L.RepeatVector):
        return math.sqrt(layer.n)
    if isinstance(layer, _MERGES):
        return _merge_bound(layer, [1.0] * len(input_shapes), input_shapes, output_shape, own=True)
    if isinstance(layer, _IDENTITIES):
        return 1.0
    raise ValueError(
        f"lipschitz_bound: {where} has no known Lipschitz bound. Known: Dense, Conv*, "
        "pooling, BatchNormalization, activations, merges (Add, Concatenate, ...), "
        "reshaping and dropout layers, and nested models."
    )


# Inference maps that copy, drop (zero) or move entries: 1-Lipschitz.
_IDENTITIES = tuple(
    getattr(keras.layers, name)
    for name in (
        "InputLayer",
        "Flatten",
        "Reshape",
        "Permute",
        "Identity",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "AlphaDropout",
        "GaussianDropout",
        "GaussianNoise",
        "ActivityRegularization",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "Cropping1D",
        "Cropping2D",
        "Cropping3D",
    )
)
_MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Average,
    keras.layers.Concatenate,
    keras.layers.Maximum,
    keras.layers.Minimum,
)


def _broadcast(shape, output_shape, where):
    """How many times a merge repeats each entry of an input of `shape`."""
    if shape is None or output_shape is None or tuple(shape[1:]) == tuple(output_shape[1:]):
        return 1.0
    shape, output_shape = tuple(shape[1:]), tuple(output_shape[1:])
    shape = (1,) * (len(output_shape) - len(shape)) + shape
    repeats = 1
    for d_in, d_out in zip(shape, output_shape, strict=True):
        if d_in != d_out:
            if d_out is None:
                raise ValueError(
                    f"lipschitz_bound: {where} broadcasts an input over an axis of unknown size."
                )
            repeats *= d_out
    return math.sqrt(repeats)


def _merge_bound(layer, bounds, input_shapes, output_shape, *, own=False):
    """A merge's output bound from its inputs' bounds (own=True: against its inputs concatenated)."""
    where = _layer_name(layer)
    scaled = [
        b * _broadcast(s, output_shape, where) for b, s in zip(bounds, input_shapes, strict=True)
    ]
    if isinstance(layer, keras.layers.Concatenate):
        return math.sqrt(sum(b * b for b in bounds))
    if isinstance(layer, (keras.layers.Maximum, keras.layers.Minimum)):
        return max(scaled) if own else math.sqrt(sum(b * b for b in scaled))
    # Add, Subtract, Average: against the inputs concatenated, Cauchy-Schwarz.
    total = math.sqrt(sum(b * b for b in scaled)) if own else sum(scaled)
    return total / len(bounds) if isinstance(layer, keras.layers.Average) else total


# ------------------------------------------------------------ the graph


def _shape(tensor):
    return getattr(tensor, "shape", None)


def _nodes(model):
    """The model's nodes in an order where every node follows its inputs, and its inputs."""
    graph = model._functional if isinstance(model, keras.Sequential) else model
    if graph is None:
        if not model.built:
            raise ValueError(
                f"lipschitz_bound: the model {model.name!r} is not built; build it or call it once."
            )
        return None, None
    if not hasattr(graph, "_nodes_by_depth"):
        raise ValueError(
            f"lipschitz_bound: the model {model.name!r} ({type(model).__name__}) has no layer "
            "graph (a subclassed model); build it as a Sequential or Functional model."
        )
    nodes = [
        node
        for depth in sorted(graph._nodes_by_depth, reverse=True)
        for node in graph._nodes_by_depth[depth]
    ]
    return nodes, graph.inputs


def _walk(model, visit):
    """Run `visit(layer, node_inputs_bounds, input_shapes, output_shape)` along the graph."""
    nodes, inputs = _nodes(model)
    if nodes is None:  # a Sequential model built without an input shape: a chain
        bound = 1.0
        for layer in model.layers:
            bound = visit(layer, [bound], [None], None)
        return bound
    bounds = {id(x): 1.0 for x in inputs}
    for node in nodes:
        if node.is_input or node.operation is None:
            continue
        layer = node.operation
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                f"lipschitz_bound: the model {model.name!r} applies the operation "
                f"{type(layer).__name__} ({getattr(layer, 'name', '')!r}) outside any layer; "
                "only layers are bounded (use keras.layers.Add for x + y)."
            )
        inbound = node.input_tensors
        if any(id(x) not in bounds for x in inbound):
            continue  # not reached from the inputs (Keras's own walk skips it too)
        out = visit(
            layer,
            [bounds[id(x)] for x in inbound],
            [_shape(x) for x in inbound],
            _shape(node.output_tensors[0]) if node.output_tensors else None,
        )
        for x in node.output_tensors:
            bounds[id(x)] = out
    missing = [x for x in model.outputs if id(x) not in bounds]
    if missing:
        raise ValueError(f"lipschitz_bound: an output of {model.name!r} is not reached.")
    return math.sqrt(sum(bounds[id(x)] ** 2 for x in model.outputs))


def _propagate(layer, bounds, input_shapes, output_shape):
    if isinstance(layer, _MERGES):
        return _merge_bound(layer, bounds, input_shapes, output_shape)
    own = _own_bound(layer, input_shapes, output_shape)
    return own * math.sqrt(sum(b * b for b in bounds))


def lipschitz_bound(model):
    """A certified upper bound on the L2 Lipschitz constant of a Sequential or Functional model.

    `||model(a) - model(b)|| <= lipschitz_bound(model) * ||a - b||` for any two
    inputs of one sample, at inference, computed from the weights as they are:
    Dense by the spectral norm of its kernel (float64 SVD); Conv1D/2D/3D,
    their transposes, grouped, dilated, depthwise and separable convolutions
    by `conv_norm_bound`, valid for any input size, padding and stride;
    activations, pooling, BatchNormalization, merges and reshaping layers by
    the constants of `layer_lipschitz_bounds`; along the graph as the module
    documentation says. A layer or activation it can not bound is an error
    naming it. Read once, eagerly; returns a Python float.

    Example:

    >>> import keras
    >>> import kconstraints as kc
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="tanh")])
    >>> _ = model.layers[0].kernel.assign([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    >>> round(kc.lipschitz_bound(model), 6)
    3.0
    """
    check_model("lipschitz_bound", model)
    return _walk(model, _propagate)


def layer_lipschitz_bounds(model):
    """Each layer's own Lipschitz bound, by layer name: `{name: float}`, in graph order.

    The constant of the layer as a map from its inputs (concatenated) to its
    output, its activation included: Dense and convolutions as in
    `lipschitz_bound`; an activation its largest slope (relu, tanh 1,
    sigmoid 1/4, gelu 1.129, silu 1.0999, ...); MaxPooling
    `sqrt(prod(ceil(pool / strides)))` (an entry sits in that many windows);
    AveragePooling `sqrt(prod(ceil(pool / strides)) / prod(pool))` for
    "valid", `sqrt(prod(ceil(pool / strides)))` for "same";
    GlobalAveragePooling `1 / sqrt(positions)`; BatchNormalization
    `max |gamma / sqrt(moving_variance + epsilon)|`; Flatten, Reshape,
    Dropout, padding and cropping 1; a nested model its `lipschitz_bound`;
    Add of n inputs `sqrt(n)`, Concatenate 1. The model's bound is not the
    product of these: merges combine their branches as the module says. A
    layer called several times keeps its largest bound.

    Example:

    >>> import keras
    >>> import kconstraints as kc
    >>> model = keras.Sequential(
    ...     [
    ...         keras.Input((4, 4, 1)),
    ...         keras.layers.MaxPooling2D(3, strides=1, name="pool"),
    ...         keras.layers.Flatten(name="flat"),
    ...     ]
    ... )
    >>> kc.layer_lipschitz_bounds(model)
    {'pool': 3.0, 'flat': 1.0}
    """
    check_model("layer_lipschitz_bounds", model)
    found = {}

    def record(layer, bounds, input_shapes, output_shape):
        own = _own_bound(layer, input_shapes, output_shape)
        found[layer.name] = max(found.get(layer.name, 0.0), own)
        return 1.0

    _walk(model, record)
    return found
