"""``compile=true``: a network's forward through ``torch.compile``, and eager again where compiling fails.

The bound ``forward`` is compiled rather than the module, so the network's parameters keep their names
(checkpoints load either way) and nothing compiled is ever saved, copied or pickled: a copy (weight averaging,
process spawn) compiles afresh on its first call.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


class CompiledForward:
    """Calls ``net`` through ``torch.compile(net.forward, **options)``, compiled on the first call.

    A failure of the compiled call (no compiler toolchain, an unsupported operation) warns once and switches to
    the eager network for good; an error that eager execution raises too is the caller's own and propagates.
    """

    def __init__(self, net: nn.Module, **options: Any) -> None:
        self.net = net
        self.options = options
        self._compiled: Callable[[Tensor], Tensor] | None = None
        self.eager = False  #: True once compilation failed and the eager network runs instead

    def __call__(self, x: Tensor) -> Tensor:
        if self.eager:
            return self.net(x)
        if self._compiled is None:
            self._compiled = torch.compile(self.net.forward, **self.options)
        try:
            return self._compiled(x)
        except Exception as exc:  # any compiler failure: eager reruns the call and raises real errors
            out = self.net(x)
            self.eager, self._compiled = True, None
            warnings.warn(
                f"compile=true: torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                "running the network eagerly (set compile=false to skip the attempt)",
                RuntimeWarning,
                stacklevel=2,
            )
            return out

    def __getstate__(self) -> dict[str, Any]:
        return {"net": self.net, "options": self.options, "eager": self.eager}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["net"], **state["options"])  # type: ignore[misc]
        self.eager = bool(state["eager"])
