"""Keras 3 weight constraints in `keras.ops`: one import for JAX, TensorFlow and PyTorch."""

from kconstraints import callbacks
from kconstraints._base import Constraint
from kconstraints.combine import Compose, Intersection
from kconstraints.matrix import PSD, LowRank, Orthogonal, SpectralNorm, Symmetric
from kconstraints.norm import L1Ball, MaxNorm, MinMaxNorm, Simplex, UnitNorm
from kconstraints.order import Monotonic
from kconstraints.penalty import Penalty
from kconstraints.serialization import deserialize, get, serialize
from kconstraints.structure import Fixed, Mask, Partial
from kconstraints.training import Variable, constrain, constrained_variables, project, violations
from kconstraints.value import CenterAround, Clip, NonNeg

__version__ = "0.1.0"

__all__ = [
    "PSD",
    "CenterAround",
    "Clip",
    "Compose",
    "Constraint",
    "Fixed",
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
    "SpectralNorm",
    "Symmetric",
    "UnitNorm",
    "Variable",
    "callbacks",
    "constrain",
    "constrained_variables",
    "deserialize",
    "get",
    "project",
    "serialize",
    "violations",
]
