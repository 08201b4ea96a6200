"""When a training run stops: the papers' label-count rule, the budget, and a plateau rule.

The published rule stops after the iteration whose argmax (taken before that iteration's
update) has at most ``min_labels`` distinct labels, or after ``max_iter`` iterations. In
practice the label count often settles above ``min_labels`` and the budget is spent on
iterations that change almost nothing. The optional plateau rule stops once the label image
has been stable over the last ``plateau_iter`` iterations: the label count unchanged, and
in the median iteration of that window at most a fraction ``plateau_tol`` of the pixels
changing label. The median (not every iteration) makes the rule robust to the isolated
iterations in which a training run briefly flips a large region and flips it back: those
kept runs going for the whole budget when every iteration had to be stable.

On a GPU, reading the label count back to the host every iteration would stall the device;
`StopRule` therefore reads it every ``check_every`` iterations only (1 on the CPU, where the
read is free), so a run may end up to ``check_every - 1`` updates after the rule was met.
"""

from __future__ import annotations

from collections.abc import Hashable

import torch

__all__ = ["StopRule"]


class StopRule:
    """Decide after each training iteration whether the run is over.

    Parameters
    ----------
    max_iter : int
        Iteration budget.
    min_labels : int
        Stop when the label count is at most this (0 disables the rule).
    plateau_iter : int
        Length of the plateau window: stop once the label count has not changed for this
        many iterations and the median iteration of the window changed at most
        `plateau_tol` of the pixels (0 disables the rule).
    plateau_tol : float
        Largest fraction of pixels changing label in the window's median iteration.
    check_every : int
        Read device values (label count, changed pixels) every this many iterations.
    """

    def __init__(
        self,
        max_iter: int,
        min_labels: int,
        plateau_iter: int = 0,
        plateau_tol: float = 0.0,
        check_every: int = 1,
    ) -> None:
        self.max_iter = max_iter
        self.min_labels = min_labels
        self.plateau_iter = plateau_iter
        self.plateau_tol = plateau_tol
        self.check_every = max(1, check_every)
        # Last labels and label count of every input (key): a run over several inputs in
        # turn compares each input's labels with its own previous ones.
        self._previous: dict[Hashable, tuple[torch.Tensor, torch.Tensor]] = {}
        # Iterations in a row with an unchanged label count, and the fraction of pixels
        # that changed label in each of the last `plateau_iter` of them (a ring buffer).
        self._same_count = torch.zeros((), dtype=torch.int64)
        self._changed = torch.zeros(max(plateau_iter, 1), dtype=torch.float32)
        self._compared = 0

    def update(
        self,
        iteration: int,
        n_labels: torch.Tensor,
        channels: torch.Tensor,
        key: Hashable = None,
    ) -> str:
        """Record one iteration and return why the run stops (``""`` to go on).

        Parameters
        ----------
        iteration : int
            1 for the first iteration.
        n_labels : torch.Tensor
            0-d int64 tensor: distinct labels of this iteration's argmax.
        channels : torch.Tensor
            This iteration's argmax labels (compared with the previous ones of `key`).
        key : hashable, optional
            Which input the labels are of, when a run trains on several in turn.

        Returns
        -------
        str
            ``"min_labels"``, ``"plateau"``, ``"max_iter"`` or ``""``.
        """
        if self.plateau_iter:
            self._track_plateau(n_labels, channels, key)
        if iteration % self.check_every == 0 or iteration == self.max_iter:
            if int(n_labels) <= self.min_labels:
                return "min_labels"
            if self.plateau_iter and self._on_plateau():
                return "plateau"
        return "max_iter" if iteration >= self.max_iter else ""

    def new_view(self) -> None:
        """The next labels are of another input (new random crops): compare from there on.

        The plateau streak carries on; the first iteration on the new input is neither
        stable nor unstable.
        """
        self._previous.clear()

    def _track_plateau(self, n_labels: torch.Tensor, channels: torch.Tensor,
                       key: Hashable) -> None:
        """Record the change from the previous labels on the device, without reading it."""
        if key in self._previous:
            previous, previous_count = self._previous[key]
            changed = torch.count_nonzero(channels != previous).float() / channels.numel()
            device = changed.device
            if self._changed.device != device:
                self._changed = self._changed.to(device)
                self._same_count = self._same_count.to(device)
            self._changed[self._compared % self.plateau_iter] = changed
            self._compared += 1
            self._same_count = torch.where(n_labels == previous_count,
                                           self._same_count + 1, 0)
        # A fresh tensor every iteration, never modified; small ints when kept for long.
        kept = channels if key is None else channels.to(torch.int32)
        self._previous[key] = (kept, n_labels)

    def _on_plateau(self) -> bool:
        """Whether the last `plateau_iter` iterations form a plateau (reads the device)."""
        if int(self._same_count) < self.plateau_iter:
            return False
        # float32 fractions: allow their rounding (5/100 is 0.0500000007 in float32).
        return float(self._changed.median()) <= self.plateau_tol * (1 + 1e-6)
