"""Keras 3 weight constraints in `keras.ops`: one import for JAX, TensorFlow and PyTorch."""

from kconstraints import callbacks
from kconstraints._base import Constraint
from kconstraints.affine import AffineSet, CenterAround, Halfspace, Hyperplane
from kconstraints.bounds import Clip, NonNeg
from kconstraints.certify import layer_lipschitz_bounds, lipschitz_bound
from kconstraints.combine import Compose, Intersection
from kconstraints.lipschitz import AOL, ConvSpectralNorm, conv_norm_bound, dense_norm_bound
from kconstraints.masked import Fixed, Mask, Partial
from kconstraints.matrix import (
    PSD,
    EigenBand,
    LowRank,
    Orthogonal,
    SingularValueBand,
    Skew,
    SpectralNorm,
    Symmetric,
)
from kconstraints.norm import MaxNorm, MinMaxNorm, UnitNorm
from kconstraints.order import Monotonic
from kconstraints.penalty import Penalty
from kconstraints.serialization import deserialize, get, serialize
from kconstraints.simplex import L1Ball, Simplex
from kconstraints.sparse import NM, TopK
from kconstraints.stochastic import DoublyStochastic
from kconstraints.variables import (
    Variable,
    constrain,
    constrained_variables,
    project,
    project_after_step,
    violations,
)

__version__ = "0.1.0"

__all__ = [
    "AOL",
    "NM",
    "PSD",
    "AffineSet",
    "CenterAround",
    "Clip",
    "Compose",
    "Constraint",
    "ConvSpectralNorm",
    "DoublyStochastic",
    "EigenBand",
    "Fixed",
    "Halfspace",
    "Hyperplane",
    "Intersection",
    "L1Ball",
    "LowRank",
    "Mask",
    "MaxNorm",
    "MinMaxNorm",
    "Monotonic",
    "NonNeg",
    "Orthogonal",
    "Partial",
    "Penalty",
    "Simplex",
    "SingularValueBand",
    "Skew",
    "SpectralNorm",
    "Symmetric",
    "TopK",
    "UnitNorm",
    "Variable",
    "callbacks",
    "constrain",
    "constrained_variables",
    "conv_norm_bound",
    "dense_norm_bound",
    "deserialize",
    "get",
    "layer_lipschitz_bounds",
    "lipschitz_bound",
    "project",
    "project_after_step",
    "serialize",
    "violations",
]
