"""What trains in a phase of a schedule: each parameter's learning-rate multiplier, and the
network set up for it (requires_grad, the modules kept in eval mode, the skip-gradient shortcut).

A parameter's place is its part, its stage within the part (the architecture's declaration, see
architectures/parts.py) and its kind (`schedule.PARAMETER_KINDS`). Adapter parameters (LoRA) are not
selected by rules: a phase's `adapters` gives them their multiplier; the weights they adapt
follow the rules like any other weight (the built-in LoRA freezes them).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from nnunet_transfer.architectures.parts import PARTS, NetworkParts, unwrap
from nnunet_transfer.errors import UserError
from nnunet_transfer.training.freezing import restore_skip_gradient, stop_gradient_into_frozen_skips
from nnunet_transfer.training.low_rank import adapter_parameters, add_adapters, has_adapters
from nnunet_transfer.training.schedule import KNOB, ResolvedPhase, Rule

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class Place:
    part: str
    stage: int          # index in the part's stages, data-flow order
    stages: int         # how many stages the part has
    distance: int       # stages between this one and the head (the head: 0)
    kind: str


def parameter_kinds(network: nn.Module) -> dict[int, str]:
    """id(parameter) -> weights / biases / norms, by the module that holds it."""
    kinds = {}
    for module in unwrap(network).modules():
        for name, parameter in module.named_parameters(recurse=False):
            kinds.setdefault(id(parameter), "norms" if isinstance(module, _NORMS)
                             else "biases" if name == "bias" else "weights")
    return kinds


def places(network: nn.Module, parts: NetworkParts) -> dict[int, Place]:
    """id(parameter) -> its Place, for every parameter of the network."""
    kinds = parameter_kinds(network)
    order = [(part, index, len(stages), params) for part in PARTS
             for stages in [parts.stage_parameters(part)]
             for index, params in enumerate(stages)]
    out = {}
    for position, (part, index, count, params) in enumerate(order):
        for parameter in params:
            out[id(parameter)] = Place(part, index, count, len(order) - 1 - position,
                                       kinds[id(parameter)])
    return out


def _selects(rule: Rule, place: Place, architecture: str) -> bool:
    if place.part not in rule.parts or place.kind not in rule.kinds:
        return False
    if rule.stages is None:
        return True
    for stage in rule.stages:
        if not -place.stages <= stage < place.stages:
            raise UserError(
                f"a rule selects stage {stage} of the {place.part}, but {architecture} has "
                f"{place.stages} {place.part} stage(s) (0 to {place.stages - 1}, or -1 for the "
                "last); fix the strategy's stages")
    return place.stage in {s % place.stages for s in rule.stages}


def multipliers(network: nn.Module, parts: NetworkParts, phase: ResolvedPhase,
                decay_knob: float, adapter_ids: set[int] = frozenset()) -> dict[int, float]:
    """id(parameter) -> learning-rate multiplier in `phase` (0: frozen), adapters included."""
    architecture = type(unwrap(network)).__name__
    out = {}
    for key, place in places(network, parts).items():
        if key in adapter_ids:
            out[key] = phase.adapters.lr if phase.adapters else 0.0
            continue
        multiplier = 0.0
        for rule in phase.rules:
            if _selects(rule, place, architecture):
                decay = decay_knob if rule.decay == KNOB else (rule.decay or 1.0)
                multiplier = rule.lr * decay ** place.distance
        out[key] = multiplier
    return out


def apply_phase(network: nn.Module, parts: NetworkParts, multiplier: dict[int, float],
                adapter_ids: set[int] = frozenset()) -> list[dict]:
    """Set requires_grad from `multiplier`, take the skip-gradient shortcut exactly while the
    whole encoder is frozen, and return the optimizer's parameter groups, one per multiplier
    ({"params": [...], "multiplier": m}, the largest multiplier first)."""
    groups: dict[float, list[nn.Parameter]] = {}
    for parameter in unwrap(network).parameters():
        m = multiplier[id(parameter)]
        parameter.requires_grad_(m > 0)
        if m > 0:
            groups.setdefault(m, []).append(parameter)
    encoder_frozen = not any(p.requires_grad for p in parts.parameters("encoder"))
    if encoder_frozen:
        stop_gradient_into_frozen_skips(unwrap(network))
    else:
        restore_skip_gradient(unwrap(network))
    return [{"params": params, "multiplier": m}
            for m, params in sorted(groups.items(), key=lambda item: -item[0])]


def frozen_modules(parts: NetworkParts, adapter_ids: set[int] = frozenset()
                   ) -> list[nn.Module]:
    """The parts, or else the stages, none of whose (non-adapter) parameters train: they stay
    in eval mode so their normalisation statistics stay fixed."""
    def frozen(params) -> bool:
        return not any(p.requires_grad for p in params if id(p) not in adapter_ids)

    out = []
    for part in PARTS:
        if frozen(parts.parameters(part)):
            out.extend(parts.modules[part])
            continue
        for stage, params in zip(parts.stage_modules(part), parts.stage_parameters(part)):
            if frozen(params):
                out.extend(stage)
    return out


def wholly_frozen_parts(parts: NetworkParts) -> set[str]:
    """The parts none of whose parameters (adapters included) train."""
    return {part for part in PARTS
            if not any(p.requires_grad for p in parts.parameters(part))}


def set_up_phase(network: nn.Module, parts: NetworkParts, phase: ResolvedPhase,
                 lora_rank: int = 4, layerwise_decay: float = 0.5, seed: int = 0,
                 adapters_allowed: bool = True) -> tuple[list[dict], list[nn.Module]]:
    """Set `network` up for `phase`, as the trainer and the benchmarks do: adapters added if
    the phase names them, they are allowed yet (the trainer adds them once the pretrained
    weights are in) and the network has none; requires_grad per parameter. Returns the
    optimizer's parameter groups ({"params", "multiplier"}) and the modules to keep in eval
    mode."""
    if phase.adapters and adapters_allowed and not has_adapters(network):
        rank = lora_rank if phase.adapters.rank == KNOB else phase.adapters.rank
        add_adapters([m for part in phase.adapters.parts for m in parts.modules[part]], rank, seed)
    adapter_ids = {id(p) for p in adapter_parameters(network)}
    groups = apply_phase(network, parts, multipliers(network, parts, phase, layerwise_decay,
                                                     adapter_ids), adapter_ids)
    return groups, frozen_modules(parts, adapter_ids)
