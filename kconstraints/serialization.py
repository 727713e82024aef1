"""`get`, `serialize` and `deserialize`, in the manner of `keras.constraints`."""

from __future__ import annotations

import keras

from kconstraints._registry import NAMES

__all__ = ["deserialize", "get", "serialize"]


def serialize(constraint):
    """The JSON-ready config of a constraint, as Keras writes it in a `.keras` file."""
    return keras.saving.serialize_keras_object(constraint)


def deserialize(config, custom_objects=None):
    """Rebuild a constraint from `serialize`'s output or a `{"class_name", "config"}` dict."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"deserialize: expected a dict with a 'class_name' key, got {config!r}.")
    name = config["class_name"]
    registered = config.get("registered_name") or ""
    module = config.get("module") or "kconstraints"
    # A bare {"class_name": "MaxNorm"} means ours; Keras's own twin says so in "module".
    ours = registered.startswith("kconstraints>") or (
        not registered and module.startswith("kconstraints")
    )
    if name in NAMES and ours:
        return NAMES[name].from_config(config.get("config") or {})
    return keras.saving.deserialize_keras_object(config, custom_objects=custom_objects)


def get(identifier):
    """Turn an instance, a config dict, a class name or its snake_case alias into a constraint.

    As `keras.constraints.get`: `None` gives `None`; a callable (a
    constraint instance or a plain function) is returned as it is; a
    constraint class is instantiated with its defaults.

    Example:

    >>> import kconstraints
    >>> kconstraints.get("max_norm")
    MaxNorm(max_value=2.0, axis=0)
    >>> kconstraints.get({"class_name": "Clip", "config": {"min_value": -1.0, "max_value": 1.0}})
    Clip(min_value=-1.0, max_value=1.0)
    """
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        if identifier not in NAMES:
            known = ", ".join(sorted(NAMES))
            raise ValueError(f"Unknown constraint identifier {identifier!r}. Known: {known}.")
        return NAMES[identifier]()
    if isinstance(identifier, type) and issubclass(identifier, keras.constraints.Constraint):
        return identifier()
    if callable(identifier) and not isinstance(identifier, type):
        return identifier
    raise ValueError(f"Could not interpret constraint identifier {identifier!r}.")
