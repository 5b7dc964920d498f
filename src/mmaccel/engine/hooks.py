"""HookSet: every change the engine makes to a model, undone in reverse order on close."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import nn

log = logging.getLogger(__name__)


class HookSet:
    """Collects removable hooks and restore callbacks; ``close()`` undoes them all, also after an error."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def forward_pre_hook(self, module: nn.Module, hook: Callable[..., Any], with_kwargs: bool = False) -> None:
        # prepend=True: run before transformers' own lazily installed output-capturing hooks.
        handle = module.register_forward_pre_hook(hook, with_kwargs=with_kwargs, prepend=True)
        self._undo.append(handle.remove)

    def forward_hook(self, module: nn.Module, hook: Callable[..., Any], with_kwargs: bool = False) -> None:
        handle = module.register_forward_hook(hook, with_kwargs=with_kwargs, prepend=True)
        self._undo.append(handle.remove)

    def on_close(self, undo: Callable[[], None]) -> None:
        """Register an arbitrary restore step (e.g. the attention implementation)."""
        self._undo.append(undo)

    def close(self) -> None:
        errors = []
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception as error:  # keep restoring the rest; report the first failure afterwards
                log.exception("failed to undo a model change")
                errors.append(error)
        if errors:
            raise errors[0]
