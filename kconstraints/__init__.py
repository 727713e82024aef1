"""Keras 3 weight constraints in `keras.ops`: one import for JAX, TensorFlow and PyTorch."""

from kconstraints import callbacks, optimizers
from kconstraints._base import Constraint
from kconstraints.certify import layer_lipschitz_bounds, lipschitz_bound
from kconstraints.lipschitz import conv_norm_bound, dense_norm_bound
from kconstraints.serialization import deserialize, get, serialize
from kconstraints.variables import (
    Variable,
    constrain,
    constrained_variables,
    project,
    project_after_step,
    violations,
)

# The constraint classes, written by `python -m docs.catalogue` from the registry.
# isort: off
# catalogue:imports
from kconstraints.affine import AffineSet, CenterAround, Halfspace, Hyperplane, Radial
from kconstraints.bounds import Clip, NonNeg
from kconstraints.combine import Compose, Intersection
from kconstraints.lipschitz import AOL, ConvSpectralNorm
from kconstraints.masked import Fixed, Mask, Partial
from kconstraints.matrix import (
    EigenBand,
    LowRank,
    Orthogonal,
    PSD,
    SingularValueBand,
    Skew,
    SpectralNorm,
    Symmetric,
)
from kconstraints.norm import MaxNorm, MinMaxNorm, UnitNorm
from kconstraints.order import Monotonic, Unimodal
from kconstraints.penalty import Penalty
from kconstraints.polyhedron import Polyhedron
from kconstraints.simplex import L1Ball, L1Sphere, Simplex
from kconstraints.sparse import NM, SparseSimplex, TopK
from kconstraints.stochastic import DoublyStochastic, Transport
# /catalogue:imports
# isort: on

__version__ = "0.1.0"

# catalogue:names
_CONSTRAINTS = [
    "AOL",
    "AffineSet",
    "CenterAround",
    "Clip",
    "Compose",
    "ConvSpectralNorm",
    "DoublyStochastic",
    "EigenBand",
    "Fixed",
    "Halfspace",
    "Hyperplane",
    "Intersection",
    "L1Ball",
    "L1Sphere",
    "LowRank",
    "Mask",
    "MaxNorm",
    "MinMaxNorm",
    "Monotonic",
    "NM",
    "NonNeg",
    "Orthogonal",
    "PSD",
    "Partial",
    "Penalty",
    "Polyhedron",
    "Radial",
    "Simplex",
    "SingularValueBand",
    "Skew",
    "SparseSimplex",
    "SpectralNorm",
    "Symmetric",
    "TopK",
    "Transport",
    "Unimodal",
    "UnitNorm",
]
# /catalogue:names

_TOOLS = [
    "Constraint",
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
    "optimizers",
    "project",
    "project_after_step",
    "serialize",
    "violations",
]
__all__ = _CONSTRAINTS + _TOOLS
