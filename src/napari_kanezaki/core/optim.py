"""The optimiser of a training run, built from the configuration."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from napari_kanezaki.core.config import Config

__all__ = ["make_optimizer"]


def make_optimizer(config: Config, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD with momentum (the papers), Adam or ASGD, as ``config.optimizer`` says.

    Parameters
    ----------
    config : SPConfig or STConfig
        ``optimizer``, ``lr``, ``momentum`` (SGD only) and ``weight_decay``.
    params : iterable of torch.nn.Parameter

    Returns
    -------
    torch.optim.Optimizer
    """
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.ASGD(params, lr=config.lr, weight_decay=config.weight_decay)
