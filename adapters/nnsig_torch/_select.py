"""Choosing which modules of a PyTorch model to capture."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence

from torch import nn

from nnsig_core.adapter import LayerSelectionError, UnknownLayerError, close_matches

__all__ = [
    "ACTIVATION_TYPES",
    "LayerSelectionError",
    "LayerSpec",
    "UnknownLayerError",
    "default_layers",
    "resolve_layers",
    "unwrap_model",
]

logger = logging.getLogger("nnsig_torch")

#: Module types the default selection captures when the model has any of them.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Threshold,
    nn.LogSigmoid,
)

# Leaves that never change their input in eval mode: capturing them only duplicates data.
_PASS_THROUGH_TYPES: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)

#: One entry of ``layers``: a qualified module name, a glob pattern or a module type.
LayerSpec = str | type

_GLOB_CHARS = frozenset("*?[")



def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the user's module inside ``DataParallel``, DDP or ``torch.compile`` wrappers.

    Parameters
    ----------
    model : torch.nn.Module
        The model as given by the user.

    Returns
    -------
    torch.nn.Module
        The innermost module, whose ``named_modules()`` carry no ``module.`` or
        ``_orig_mod.`` prefix.
    """
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            logger.info("Unwrapping %s: capturing model.module", type(model).__name__)
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            logger.info("Unwrapping a torch.compile'd model: capturing the original module")
            model = model._orig_mod
        else:
            return model


def _is_glob(s: str) -> bool:
    return any(c in _GLOB_CHARS for c in s)


def _unknown(name: str, names: Sequence[str], what: str = "layer") -> UnknownLayerError:
    hint = close_matches(name, names)
    msg = f"Unknown {what} {name!r}."
    msg += f" Did you mean: {', '.join(repr(h) for h in hint)}?" if hint else ""
    msg += " TorchAdapter.available_layers(model) lists all names."
    return UnknownLayerError(msg)


def resolve_layers(
    model: nn.Module, layers: LayerSpec | Sequence[LayerSpec]
) -> tuple[list[str], set[str]]:
    """Resolve ``layers`` to qualified module names of ``model``.

    Parameters
    ----------
    model : torch.nn.Module
        The (unwrapped) model.
    layers : str, type or sequence of them
        Exact qualified names (as in ``model.named_modules()``), glob patterns
        matched with :func:`fnmatch.fnmatchcase` (``"features.*"``) or
        ``nn.Module`` subclasses (every module that is an instance).

    Returns
    -------
    names : list of str
        Matching module names, in ``named_modules()`` order, without duplicates.
    explicit : set of str
        The names given exactly; those must fire on every batch. Modules found
        through a glob or a type may be skipped if they never run.

    Raises
    ------
    UnknownLayerError
        For an exact name that is not a module of ``model``.
    LayerSelectionError
        For a glob or type that matches no module, or an empty selection.
    """
    if isinstance(layers, (str, type)):
        layers = [layers]
    modules = {name: m for name, m in model.named_modules() if name}
    names = list(modules)
    chosen: set[str] = set()
    explicit: set[str] = set()
    for spec in layers:
        if isinstance(spec, type) and issubclass(spec, nn.Module):
            hit = {n for n, m in modules.items() if isinstance(m, spec)}
            if not hit:
                present = sorted({type(m).__name__ for m in modules.values()})
                raise LayerSelectionError(
                    f"No module of type {spec.__name__} in {type(model).__name__}; "
                    f"types present: {', '.join(present)}."
                )
        elif isinstance(spec, str) and _is_glob(spec):
            hit = {n for n in names if fnmatch.fnmatchcase(n, spec)}
            if not hit:
                raise LayerSelectionError(
                    f"Pattern {spec!r} matches no module of {type(model).__name__}; "
                    f"names look like: {', '.join(repr(n) for n in names[:8])}"
                    f"{', ...' if len(names) > 8 else ''}."
                )
        elif isinstance(spec, str):
            name = spec
            for prefix in ("module.", "_orig_mod."):  # a name copied from a wrapped model
                if (
                    name not in modules
                    and name.startswith(prefix)
                    and name[len(prefix) :] in modules
                ):
                    name = name[len(prefix) :]
            if name not in modules:
                raise _unknown(spec, names)
            hit = {name}
            explicit.add(name)
        else:
            raise TypeError(
                "Each entry of `layers` must be a module name, a glob pattern or an "
                f"nn.Module subclass; got {spec!r}."
            )
        chosen |= hit
    if not chosen:
        raise LayerSelectionError("`layers` is empty: select at least one layer.")
    return [n for n in names if n in chosen], explicit


def default_layers(model: nn.Module, log: bool = True) -> list[str]:
    """The layers a user would pick: the activations, else the hidden leaf modules.

    Every activation module (:data:`ACTIVATION_TYPES`) when the model has any;
    otherwise every leaf module except the last one (usually the output head),
    skipping pass-through leaves (``Dropout``, ``Identity``, ``Flatten``).
    The choice is logged on the ``nnsig_torch`` logger.

    Parameters
    ----------
    model : torch.nn.Module
        The (unwrapped) model.
    log : bool
        Log the choice (at INFO level).

    Returns
    -------
    list of str
        Qualified module names in ``named_modules()`` order.

    Raises
    ------
    LayerSelectionError
        When the model has no hidden layer to capture.
    """
    named = [(n, m) for n, m in model.named_modules() if n]
    chosen = [n for n, m in named if isinstance(m, ACTIVATION_TYPES)]
    how = "activation modules"
    if not chosen:
        leaves = [n for n, m in named if next(m.children(), None) is None]
        chosen = [
            n for n in leaves[:-1] if not isinstance(model.get_submodule(n), _PASS_THROUGH_TYPES)
        ]
        how = "hidden leaf modules (the model has no activation modules)"
    if not chosen:
        raise LayerSelectionError(
            f"{type(model).__name__} has no hidden layer to capture by default; "
            "pass `layers=` (TorchAdapter.available_layers(model, x) lists them)."
        )
    shown = ", ".join(chosen[:6]) + (", ..." if len(chosen) > 6 else "")
    if log:
        logger.info("Capturing %d %s by default: %s", len(chosen), how, shown)
    return chosen
