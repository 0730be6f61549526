"""The structure of a Keras model and how to run it with taps on its layers.

A model is a tree of *scopes*. A graph scope is a symbolic graph (functional, or the one
Keras builds for a Sequential model): each call of each operation is a :class:`Call`
(``layer``, ``layer:1``...); a call of a nested model (or of a layer with layers) has a
child scope whose names are prefixed by the call's name and ``/``. A hook scope is a
model or layer without a graph, captured with torch forward hooks.

Each needed graph scope runs as one *layer model*, ``keras.Model(graph inputs, [tapped
tensors] + [inputs of nested calls] + [outputs])``, with ``predict_on_batch``; a nested
scope runs on the values its call received. Building it from the model's own symbolic
tensors leaves the model as it was.

Keras internals used (stable through Keras 3.x): ``Function._nodes_by_depth``,
``Function._inputs_struct``, ``Operation._inbound_nodes``, ``Node.outputs``,
``Node.arguments``, ``Sequential._functional`` and ``Layer._flatten_layers``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from nnsig_core._warnings import warn

InputLayer = keras.layers.InputLayer

#: One captured value: (capture name, layer path, layer, value).
Record = tuple[str, str, Any, Any]


def graph_of(op: Any) -> Any | None:
    """The symbolic graph (a ``keras.Function``) of a functional or Sequential model, or None."""
    if isinstance(op, keras.Sequential):
        return getattr(op, "_functional", None) or None
    if isinstance(op, keras.Function) and isinstance(op, keras.Layer):
        return op
    return None


def sublayers(layer: Any) -> list[Any]:
    """The layers tracked directly by ``layer`` (not recursively), input layers left out."""
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return []
    return [
        s for s in flatten(include_self=False, recursive=False) if not isinstance(s, InputLayer)
    ]


@dataclass(eq=False)
class Call:
    """One call of an operation in a symbolic graph."""

    name: str  # capture name: "encoder:1/dense:2"
    path: str  # layer path: "encoder/dense"
    op: Any
    node: Any
    outputs: list[Any]  # KerasTensors, flattened
    child: Scope | None = None
    selected: list[int] = field(default_factory=list)  # positions in `outputs` to capture

    def output_name(self, i: int) -> str:
        return self.name if len(self.outputs) == 1 else f"{self.name}.{i}"


@dataclass(eq=False)
class Scope:
    """A model (or layer with layers) whose inner layers can be captured."""

    op: Any
    prefix: str  # prefix of capture names: "" or "encoder:1/"
    path_prefix: str  # prefix of layer paths: "" or "encoder/"
    graph: Any = None  # keras.Function, or None for a hook scope
    calls: list[Call] = field(default_factory=list)  # graph scopes
    layers: dict[str, Any] = field(default_factory=dict)  # hook scopes: path -> layer
    hooked: list[str] = field(default_factory=list)  # hook scopes: selected paths
    drop_output: bool = False  # hook root with default selection: leave out the output layer

    @property
    def is_graph(self) -> bool:
        return self.graph is not None

    def needed(self) -> bool:
        """Whether anything in this scope (or below) is captured."""
        if self.is_graph:
            return any(c.selected or (c.child is not None and c.child.needed()) for c in self.calls)
        return bool(self.hooked)

    def hook_scopes(self) -> list[Scope]:
        """The needed hook scopes in this tree."""
        if not self.is_graph:
            return [self] if self.hooked else []
        found = []
        for c in self.calls:
            if c.child is not None:
                found += c.child.hook_scopes()
        return found


def _graph_nodes(fn: Any) -> dict[int, list[Any]]:
    """The nodes of graph ``fn`` per operation id, in call order."""
    per_op: dict[int, list[Any]] = {}
    for nodes in fn._nodes_by_depth.values():
        for node in nodes:
            op = node.operation
            if op is None or node.is_input or isinstance(op, InputLayer):
                continue
            per_op.setdefault(id(op), []).append(node)
    for nodes in per_op.values():
        inbound = nodes[0].operation._inbound_nodes
        nodes.sort(key=lambda nd: next(i for i, x in enumerate(inbound) if x is nd))
    return per_op


def build_scope(op: Any, graph: Any, prefix: str = "", path_prefix: str = "") -> Scope:
    """Describe graph ``graph`` of ``op``: every call, nested scopes included."""
    scope = Scope(op=op, prefix=prefix, path_prefix=path_prefix, graph=graph)
    per_op = _graph_nodes(graph)
    for o in graph.operations:
        if isinstance(o, InputLayer):
            continue
        for k, node in enumerate(per_op.get(id(o), [])):
            name = prefix + o.name + (f":{k}" if k else "")
            path = path_prefix + o.name
            call = Call(name=name, path=path, op=o, node=node, outputs=list(node.outputs))
            inner = graph_of(o)
            if inner is not None:
                call.child = build_scope(o, inner, name + "/", path + "/")
            elif isinstance(o, keras.Layer) and sublayers(o):
                call.child = hook_scope(o, name + "/", path + "/")
            scope.calls.append(call)
    return scope


def hook_scope(op: Any, prefix: str = "", path_prefix: str = "") -> Scope:
    """Describe a model or layer without a symbolic graph: its layers, recursively, by path."""
    scope = Scope(op=op, prefix=prefix, path_prefix=path_prefix)
    seen: set[int] = {id(op)}

    def walk(layer: Any, base: str) -> None:
        for sub in sublayers(layer):
            if id(sub) in seen:  # a layer reachable twice is captured under its first path
                continue
            seen.add(id(sub))
            path = base + sub.name
            if path in scope.layers:
                i = 2
                while f"{path}~{i}" in scope.layers:
                    i += 1
                warn(
                    f"Two layers of {op.name!r} are both named {path!r}; the second is "
                    f"captured as '{path}~{i}'."
                )
                path = f"{path}~{i}"
            scope.layers[path] = sub
            walk(sub, path + "/")

    walk(op, path_prefix)
    return scope


def units(scope: Scope) -> dict[str, Any]:
    """Every selectable layer path of the tree to its layer (or operation), model order."""
    found: dict[str, Any] = {}

    def walk(s: Scope) -> None:
        if s.is_graph:
            for c in s.calls:
                found.setdefault(c.path, c.op)
                if c.child is not None:
                    walk(c.child)
        else:
            for p, layer in s.layers.items():
                found.setdefault(p, layer)

    walk(scope)
    return found


def capture_names(scope: Scope) -> list[str]:
    """Capture names known without running the model (graph scopes): calls and outputs."""
    names: list[str] = []

    def walk(s: Scope) -> None:
        if not s.is_graph:
            return
        for c in s.calls:
            if c.child is not None:
                walk(c.child)
            names.append(c.name)
            if len(c.outputs) > 1:
                names.extend(c.output_name(i) for i in range(len(c.outputs)))

    walk(scope)
    return names


def mark_selection(scope: Scope, paths: set[str], exact: set[str]) -> None:
    """Set what each call / hook scope captures."""
    if scope.is_graph:
        for c in scope.calls:
            n = len(c.outputs)
            if c.path in paths or c.name in exact:
                c.selected = list(range(n))
            else:
                c.selected = [i for i in range(n) if n > 1 and c.output_name(i) in exact]
            if c.child is not None:
                mark_selection(c.child, paths, exact)
    else:
        scope.hooked = [p for p in scope.layers if p in paths]


def _as_list(values: Any, n: int) -> list[Any]:
    if n == 1 and not isinstance(values, (list, tuple)):
        return [values]
    return list(values)


def _model_inputs(x: Any) -> Any:
    # predict_on_batch reads a tuple as (x, y[, sample_weight]); several inputs go as a list.
    return list(x) if isinstance(x, tuple) else x


class GraphRunner:
    """Runs one graph scope through its layer model and its nested scopes."""

    def __init__(self, scope: Scope, outputs: Sequence[Any] = ()) -> None:
        self.scope = scope
        tensors: list[Any] = []
        seen: set[int] = set()

        def want(t: Any) -> None:
            if id(t) not in seen:
                seen.add(id(t))
                tensors.append(t)

        self.children: dict[int, GraphRunner | HookRunner] = {}
        for c in scope.calls:
            if c.child is not None and c.child.needed():
                for t in c.node.arguments.keras_tensors:
                    want(t)
                self.children[id(c)] = make_runner(c.child)
            for i in c.selected:
                want(c.outputs[i])
        for t in outputs:
            want(t)
        self.outputs = list(outputs)
        self.tensors = tensors
        inputs = scope.graph._inputs_struct
        if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
            inputs = inputs[0]
        try:
            self.model = keras.Model(
                inputs, tensors, name=f"nnsig_layer_model_{_safe(scope.op.name)}"
            )
        except Exception as exc:  # pragma: no cover - depends on exotic graphs
            raise RuntimeError(
                f"Could not build the layer model of {scope.op.name!r} "
                f"({type(exc).__name__}: {exc}). Please report this model to nnsig."
            ) from exc

    def run(self, x: Any) -> tuple[list[Record], list[Any]]:
        """Run on inputs ``x``; return the captures (scope order) and the requested outputs."""
        values = _as_list(self.model.predict_on_batch(_model_inputs(x)), len(self.tensors))
        by_id = {id(t): v for t, v in zip(self.tensors, values, strict=True)}
        records: list[Record] = []
        for c in self.scope.calls:
            child = self.children.get(id(c))
            if child is not None:
                args, kwargs = c.node.arguments.fill_in(by_id)
                records += child.run_call(args, kwargs)
            for i in c.selected:
                records.append((c.output_name(i), c.path, c.op, by_id[id(c.outputs[i])]))
        return records, [by_id[id(t)] for t in self.outputs]

    def run_call(self, args: Sequence[Any], kwargs: dict[str, Any]) -> list[Record]:
        """Run as a nested model called with ``args``/``kwargs`` in its parent graph."""
        x = args[0] if args else kwargs.get("inputs")
        return self.run(x)[0]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)


class HookRunner:
    """Runs a model or layer eagerly with torch forward hooks on the selected layers."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def run_call(self, args: Sequence[Any], kwargs: dict[str, Any]) -> list[Record]:
        records, _ = self._call(lambda: self.scope.op(*args, **kwargs))
        return records

    def run(self, x: Any) -> tuple[list[Record], list[Any], list[int]]:
        """Run the root model on ``x``: captures, its flattened outputs, and the positions of
        captures that are the very output tensor (``drop_output``)."""
        if isinstance(x, tuple):
            x = list(x)
        # Tensors of the top-level layers, kept during the call only to find the output layer.
        identity: list[tuple[int, Any]] | None = [] if self.scope.drop_output else None
        records, out = self._call(lambda: self.scope.op(x, training=False), identity)
        flat = keras.tree.flatten(out)
        same = [pos for pos, raw in identity or [] if any(raw is o for o in flat)]
        return records, flat, same

    def _call(
        self, fn: Callable[[], Any], identity: list[tuple[int, Any]] | None = None
    ) -> tuple[list[Record], Any]:
        import torch

        scope = self.scope
        records: list[Record] = []
        counts: dict[str, int] = {}
        top = {p for p in scope.hooked if "/" not in p[len(scope.path_prefix) :]}

        def make_hook(path: str, layer: Any) -> Callable[..., None]:
            rel = path[len(scope.path_prefix) :]

            def hook(_module: Any, _inputs: Any, output: Any) -> None:
                k = counts.get(path, 0)
                counts[path] = k + 1
                name = scope.prefix + rel + (f":{k}" if k else "")
                leaves = [t for t in keras.tree.flatten(output) if isinstance(t, torch.Tensor)]
                for i, t in enumerate(leaves):
                    if identity is not None and path in top:
                        identity.append((len(records), t))
                    value = t.detach().to("cpu", torch.float32, copy=True)
                    records.append(
                        (name if len(leaves) == 1 else f"{name}.{i}", path, layer, value)
                    )

            return hook

        handles = []
        try:
            for path in scope.hooked:
                layer = scope.layers[path]
                handles.append(layer.register_forward_hook(make_hook(path, layer)))
            with torch.no_grad():
                result = fn()
        finally:
            for h in handles:
                h.remove()
        return records, result


def make_runner(scope: Scope, outputs: Sequence[Any] = ()) -> GraphRunner | HookRunner:
    """The runner of a scope: a layer model for graphs, hooks otherwise."""
    if scope.is_graph:
        return GraphRunner(scope, outputs)
    return HookRunner(scope)


def to_float32(value: Any) -> np.ndarray:
    """A captured value (NumPy array, torch tensor, backend tensor) as a float32 NumPy array."""
    if isinstance(value, np.ndarray):
        return value.astype(np.float32, copy=False)
    detach = getattr(value, "detach", None)
    if callable(detach):  # torch
        t = detach().cpu()
        if not t.is_floating_point() or t.dtype != _torch_float32():
            t = t.float()
        return t.numpy()
    try:
        return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float32)
    except Exception:
        return np.asarray(value, dtype=np.float32)


def _torch_float32() -> Any:
    import torch

    return torch.float32
