"""The hook protocol every model forward calls at its activation sites.

A forward is written once, with one explicit line per site::

    x = hook("blocks.3.hook_resid_pre", x)

and receives a `Hook` object. `NULL_HOOK` does nothing; `mechjax.run` builds a
`HookContext` for each call that applies interventions and records captures. The
context lives only for the duration of one trace, so the forward stays pure as seen from
outside: nothing is registered on a model, nothing has to be removed afterwards.

Some sites are expensive (per-head results `[batch, pos, n_heads, d_model]`, split
q/k/v inputs). A forward asks `hook.wants(name)` at trace time and computes such a site
only when an intervention or a capture names it.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import jax

Array = jax.Array


@runtime_checkable  # so run-time type checkers (beartype in the tests) can check it
class Hook(Protocol):
    """What a forward calls at each site."""

    def __call__(self, name: str, x: Array) -> Array: ...

    def wants(self, name: str) -> bool: ...


class _NullHook:
    """Identity at every site; wants nothing."""

    def __call__(self, name: str, x: Array) -> Array:
        return x

    def wants(self, name: str) -> bool:
        return False

    def __repr__(self) -> str:
        return "NULL_HOOK"


NULL_HOOK: Hook = _NullHook()


class HookContext:
    """Applies interventions and records captured activations during one trace.

    Args:
      interventions: site name -> sequence of interventions, applied in order.
      capture: site names whose (post-intervention) value is recorded in `cache`.

    `visited` lists the sites the forward reached, so a caller can refuse a request for a
    site that was never computed.
    """

    def __init__(
        self,
        interventions: Mapping[str, Sequence[Any]],
        capture: Sequence[str] = (),
    ):
        self.interventions = dict(interventions)
        self.capture = frozenset(capture)
        self.cache: dict[str, Array] = {}
        self.visited: list[str] = []

    def wants(self, name: str) -> bool:
        return name in self.interventions or name in self.capture

    def __call__(self, name: str, x: Array) -> Array:
        self.visited.append(name)
        for intervention in self.interventions.get(name, ()):
            x = intervention.apply(x, site=name)
        if name in self.capture:
            self.cache[name] = x
        return x
