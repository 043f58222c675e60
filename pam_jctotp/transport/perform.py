"""The one dispatch of a conversation's steps, shared by the conversation server and
the unit tests' harness (tests/unit/harness.py): a new step type is added here,
to `StepIO`, and mypy then asks every runner for its method.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from ..core.steps import Error, Info, Prompt, Result, SetPassword, Verdict, VerifyPassword

C = TypeVar("C", contravariant=True)


class StepIO(Protocol[C]):
    """What a runner does for each step, for the conversation `ctx`. What a method
    returns is the runner's own business (the value to send back, or how its
    loop goes on): perform() hands it back."""

    def prompt(self, ctx: C, step: Prompt) -> Any: ...
    def show(self, ctx: C, step: Info | Error) -> Any: ...
    def verify(self, ctx: C, step: VerifyPassword) -> Any: ...
    def set_password(self, ctx: C, step: SetPassword) -> Any: ...
    def end(self, ctx: C, step: Verdict | Result) -> Any: ...


_METHOD = {Prompt: "prompt", Info: "show", Error: "show", VerifyPassword: "verify",
           SetPassword: "set_password", Verdict: "end", Result: "end"}


def perform(step: object, io: StepIO[C], ctx: C) -> Any:
    """Do what `step` asks, through `io`."""
    name = _METHOD.get(type(step))
    if name is None:
        raise TypeError(f"unknown conversation step {type(step).__name__}")
    return getattr(io, name)(ctx, step)
