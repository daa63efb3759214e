"""Routing nnU-Net's `-pretrained_weights` to the transfer trainers.

nnU-Net applies -pretrained_weights through a module-level function of run_training and gives
the trainer no say. Routing the call to our trainer is what lets a strategy refuse or require
weights, tolerate other classes or channels, and report a mismatch readably. Networks of other
trainers still go to nnU-Net's own loader. The trainer installs the routing when it is made
(`install_pretrained_routing`), which stops a run with -pretrained_weights when the installed
nnU-Net loads its weights some other way; importing this module changes nothing.
"""

from __future__ import annotations

import inspect
import sys
import weakref
from importlib.metadata import version

import nnunetv2.run.run_training as nnunet_run_training
from nnunetv2.run import load_pretrained_weights as nnunet_loading
from torch import nn

# weak keys: a network that is gone takes its trainer with it
_TRAINER_OF_NETWORK: "weakref.WeakKeyDictionary[nn.Module, object]" = weakref.WeakKeyDictionary()


def route_pretrained_weights_of(network: nn.Module, trainer) -> None:
    """Send nnU-Net's `-pretrained_weights` for `network` to `trainer.load_pretrained_weights`."""
    _TRAINER_OF_NETWORK[network] = trainer


def _route_pretrained_weights(network, fname, verbose=False):
    trainer = _TRAINER_OF_NETWORK.get(network)
    if trainer is None:
        return _route_pretrained_weights.nnunet_loader(network, fname, verbose)
    trainer.load_pretrained_weights(fname)


def routing_problem() -> str | None:
    """Why the routing cannot work with the installed nnU-Net, or None. The routing replaces
    the name `load_pretrained_weights` in run_training, which `maybe_load_checkpoint` calls
    with (network, fname, verbose): a release that calls another function, renames it or
    loads elsewhere would bypass our trainers and load all-or-nothing without a word."""
    current = nnunet_run_training.load_pretrained_weights
    caller = getattr(nnunet_run_training, "maybe_load_checkpoint", None)
    problems = []
    if current is not nnunet_loading.load_pretrained_weights and not getattr(
            current, "routes_to_transfer_trainers", False):
        problems.append("run_training.load_pretrained_weights is not "
                        "nnunetv2.run.load_pretrained_weights.load_pretrained_weights")
    if caller is None or "load_pretrained_weights" not in caller.__code__.co_names:
        problems.append("run_training.maybe_load_checkpoint does not call "
                        "load_pretrained_weights")
    parameters = list(inspect.signature(nnunet_loading.load_pretrained_weights).parameters)
    if parameters[:2] != ["network", "fname"]:
        problems.append(f"load_pretrained_weights takes {parameters}, not (network, fname, ...)")
    if not problems:
        return None
    return (f"nnunet-transfer cannot route -pretrained_weights to its trainers with nnunetv2 "
            f"{version('nnunetv2')} (it expects the loading of nnunetv2 2.8.1): "
            + "; ".join(problems) + ". Loading now would fall back to nnU-Net's all-or-nothing "
            "loader, so training stops here. Install nnunetv2==2.8.1, or train without "
            "-pretrained_weights.")


def install_pretrained_routing() -> None:
    """Route nnU-Net's -pretrained_weights through `route_pretrained_weights_of` from now on
    (once per process). With an nnU-Net that loads elsewhere, a run given -pretrained_weights
    stops here with exit status 2 and says why, before any training; other runs go on."""
    problem = routing_problem()
    if problem is not None:
        if "-pretrained_weights" in sys.argv:
            print(f"nnunet-transfer: {problem}", file=sys.stderr)
            sys.exit(2)
        return
    if getattr(nnunet_run_training.load_pretrained_weights, "routes_to_transfer_trainers",
               False):
        return
    _route_pretrained_weights.nnunet_loader = nnunet_run_training.load_pretrained_weights
    _route_pretrained_weights.routes_to_transfer_trainers = True
    nnunet_run_training.load_pretrained_weights = _route_pretrained_weights
