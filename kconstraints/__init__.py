"""Keras 3 weight constraints in `keras.ops`: one import for JAX, TensorFlow and PyTorch."""

from kconstraints import callbacks
from kconstraints._base import Constraint
from kconstraints.affine import CenterAround
from kconstraints.bounds import Clip, NonNeg
from kconstraints.combine import Compose, Intersection
from kconstraints.masked import Fixed, Mask, Partial
from kconstraints.matrix import PSD, LowRank, Orthogonal, SpectralNorm, Symmetric
from kconstraints.norm import MaxNorm, MinMaxNorm, UnitNorm
from kconstraints.order import Monotonic
from kconstraints.penalty import Penalty
from kconstraints.serialization import deserialize, get, serialize
from kconstraints.simplex import L1Ball, Simplex
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
    "project_after_step",
    "serialize",
    "violations",
]
