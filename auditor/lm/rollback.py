"""Back-offs of a fine-tune: return to the state of the last passing check and halve the learning rate."""

from __future__ import annotations

import copy

import torch


class BackOff(str):
    """A stop check's reason to undo the steps since its last passing check and halve the learning rate
    (``TrainConfig.max_backoffs`` times; then the run stops there, at that check's state)."""


class Rollback:
    """The trained parameters and optimiser state at the last passing check, and the back-offs to them."""

    def __init__(self, params: list[torch.nn.Parameter], optimizer, scheduler, config) -> None:
        self.params, self.optimizer, self.scheduler = params, optimizer, scheduler
        self.max_backoffs = config.max_backoffs
        self.count = 0
        self.passed = self._snapshot()

    def after_check(self, reason: str | None) -> str | None:
        """After a check: why to stop now, or None; a ``BackOff`` restores the passed state (and halves the rate
        while it may), a pass becomes the state to return to."""
        if isinstance(reason, BackOff):
            self._restore()
            if self.count == self.max_backoffs:
                return f"{reason}; back at the last passing check after {self.count} learning-rate halvings"
            self.count += 1
            self._halve_learning_rate()
            return None
        if not reason:
            self.passed = self._snapshot()
        return reason

    def _snapshot(self) -> tuple[list[torch.Tensor], dict]:
        return [p.detach().clone() for p in self.params], copy.deepcopy(self.optimizer.state_dict())

    def _restore(self) -> None:
        values, state = self.passed
        with torch.no_grad():
            for param, value in zip(self.params, values, strict=True):
                param.copy_(value)
        self.optimizer.load_state_dict(copy.deepcopy(state))

    def _halve_learning_rate(self) -> None:
        """Halve the schedule's base rates, and the rates of the next step (a restored state holds older ones)."""
        self.scheduler.base_lrs = [lr / 2 for lr in self.scheduler.base_lrs]
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * factor
