"""The extra graph outputs /explain reads, for image models with convolutions: which modules
they come from, and a wrapper whose forward returns them after the logits, to export.

A convolution block's output is the first element-wise activation module that follows its
nn.Conv2d in `named_modules()` order, with only BatchNorm2d in between (conv, BN, ReLU).
`named_modules()` order is registration order, which is execution order for the nn.Sequential
stacks the models here are built from. Containers are skipped: their children are the layers.

The activations are traced (ExplainModel); the filters are a constant, added to the exported
graph afterwards (add_filters): traced, the weight would be an initializer that is also a
graph output, and onnxscript's optimiser drops it when it fuses a BatchNorm into the conv
(seen with cifar-vgg, torch 2.13 / onnxscript 0.7), leaving the output dangling.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from torch import nn

from modelrepo.manifest import ExplainOutput, ExplainOutputs

ACTIVATION_PREFIX = "activation_"  # activation_1, activation_2, ... in model order
FILTERS_NAME = "filters"

# Element-wise activations (each output value depends only on the input value at the same
# place), so an activation map lines up with its convolution's output. Softmax, GLU and the
# like mix values along an axis and are not block outputs.
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Tanh,
    nn.Sigmoid,
    nn.LogSigmoid,
    nn.Softplus,
    nn.Softsign,
)


@dataclass(frozen=True)
class ExplainLayers:
    """Module paths (as in `named_modules()`) of a CNN's explain outputs."""

    activations: tuple[str, ...]  # one per convolution block, in model order
    filters: str  # the first Conv2d

    @classmethod
    def of(cls, explain: ExplainOutputs) -> ExplainLayers:
        """The layers a manifest's explain block names."""
        if explain.filters is None:
            raise ValueError("an explain block without filters is never exported")
        return cls(tuple(a.layer for a in explain.activations), explain.filters.layer)


def _is_container(module: nn.Module) -> bool:
    return next(module.children(), None) is not None


def find_explain_layers(model: nn.Module) -> ExplainLayers | None:
    """The modules the explain outputs come from; None for a model without an nn.Conv2d.

    A Conv2d followed by anything but BatchNorm2d or an activation (pooling, dropout, another
    Conv2d) before an activation module has no block output: a functional F.relu in forward is
    not a module and cannot be found this way.
    """
    activations: list[str] = []
    first_conv: str | None = None
    after_conv = False  # a Conv2d was seen and its activation not yet
    for path, module in model.named_modules():
        if _is_container(module):
            continue
        if isinstance(module, nn.Conv2d):
            first_conv = path if first_conv is None else first_conv
            after_conv = True
        elif after_conv and isinstance(module, ACTIVATIONS):
            activations.append(path)
            after_conv = False
        elif not isinstance(module, nn.BatchNorm2d):
            after_conv = False
    return None if first_conv is None else ExplainLayers(tuple(activations), first_conv)


def _keep_output(
    store: list[torch.Tensor], module: nn.Module, args: object, output: torch.Tensor
) -> None:
    # A copy: an in-place op later in the model (a second ReLU(inplace=True), say) would
    # otherwise change the captured map after the fact.
    store.append(output.clone())


class ExplainModel(nn.Module):
    """`model`, whose forward also returns its activation maps: (logits, *activations).

    Forward hooks are registered for each call and removed after it, so `model` itself is left
    unchanged and the torch.export tracer (non-strict: it runs this Python) sees them run.
    """

    def __init__(self, model: nn.Module, layers: ExplainLayers) -> None:
        super().__init__()
        self.model = model
        self.layers = layers
        self.training = model.training  # not .train(): that would also switch `model`

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        captured: dict[str, list[torch.Tensor]] = {p: [] for p in self.layers.activations}
        handles = [
            self.model.get_submodule(path).register_forward_hook(partial(_keep_output, store))
            for path, store in captured.items()
        ]
        try:
            logits = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        for path, outputs in captured.items():
            # A module called twice (one ReLU shared by two blocks) has no single activation map.
            if len(outputs) != 1:
                raise ValueError(f"{path} ran {len(outputs)} times in one forward, expected once")
        return (logits, *(outputs[0] for outputs in captured.values()))

    def filters(self) -> NDArray[np.float32]:
        """The first convolution's weight, (out, in, kh, kw)."""
        conv = self.model.get_submodule(self.layers.filters)
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"{self.layers.filters} is a {type(conv).__name__}, not a Conv2d")
        weight: NDArray[np.float32] = conv.weight.detach().numpy()
        return weight


def describe(model: ExplainModel, example: torch.Tensor) -> ExplainOutputs:
    """The manifest's explain block: names, layers and shapes (from one eager forward)."""
    with torch.no_grad():
        _, *activations = model(example)
    weight = model.filters()
    layers = model.layers
    return ExplainOutputs(
        activations=[
            ExplainOutput(name=f"{ACTIVATION_PREFIX}{i}", layer=path, shape=list(a.shape[1:]))
            for i, (path, a) in enumerate(zip(layers.activations, activations, strict=True), 1)
        ],
        filters=ExplainOutput(name=FILTERS_NAME, layer=layers.filters, shape=list(weight.shape)),
    )


def explain_for(model: nn.Module, example: torch.Tensor) -> ExplainOutputs | None:
    """The explain block for `model` (None without a Conv2d: exported with the logits alone)."""
    layers = find_explain_layers(model)
    return None if layers is None else describe(ExplainModel(model, layers), example)


def output_names(explain: ExplainOutputs | None) -> list[str]:
    """The explain outputs' graph names, in graph order (after the logits)."""
    if explain is None:
        return []
    names = [a.name for a in explain.activations]
    return names + ([explain.filters.name] if explain.filters is not None else [])


def traced_output_names(explain: ExplainOutputs | None) -> list[str]:
    """The explain outputs ExplainModel returns (the activations): the filters are added later."""
    return [] if explain is None else [a.name for a in explain.activations]


def add_filters(
    graph: onnx.GraphProto, explain: ExplainOutputs, weight: NDArray[np.float32]
) -> None:
    """Append the filters output to an exported graph: the weight as an initializer, and an
    Identity node that computes the output from it (an initializer that is itself a graph
    output is a corner case of ONNX that optimisers and runtimes handle unevenly)."""
    if explain.filters is None:
        return
    name = explain.filters.name
    stored = f"{explain.filters.layer}.weight"
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    if {name, stored} & taken:
        raise ValueError(f"the exported graph already has a value named {name!r} or {stored!r}")
    graph.initializer.append(onnx.numpy_helper.from_array(weight, stored))
    graph.node.append(onnx.helper.make_node("Identity", [stored], [name], name=name))
    graph.output.append(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(weight.shape))
    )
