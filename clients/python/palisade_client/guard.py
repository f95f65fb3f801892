"""``@guard``: ask the daemon before a tool function runs.

::

    @guard(tool="stripe", action="create_payment",
           params=lambda amount, currency, customer: {
               "amount": amount, "currency": currency, "customer": customer})
    def create_payment(amount: float, currency: str, customer: str) -> str:
        ...

Each call of ``create_payment`` first asks ``Decide``. On ALLOW the function
runs; on DENY, or when the daemon cannot be asked, it does not run and
``PalisadeDenied`` is raised; on APPROVAL_REQUIRED ``ApprovalRequired`` is
raised, or with ``wait=`` the guard waits for an operator's approval and
then runs the function exactly once. ``async def`` functions are guarded
the same way, with ``AsyncClient``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from .aio import AsyncClient
from .client import Client, OnDecision

F = TypeVar("F", bound=Callable[..., Any])

#: What to send as the call's parameters: a function of the wrapped
#: function's arguments returning a dict, a list of argument names, or None
#: for every argument (``self``/``cls`` excepted).
ParamsSpec = Callable[..., Mapping[str, Any]] | Sequence[str] | None
#: A fixed string, or a function of the wrapped function's arguments.
ResourceSpec = str | Callable[..., str]
ContextSpec = Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None

_defaults: dict[str, Any] = {}
_defaults_lock = threading.Lock()


def default_client() -> Client:
    """The process-wide ``Client()`` (``$PALISADE_SOCKET``), made on first use."""
    with _defaults_lock:
        if "sync" not in _defaults:
            _defaults["sync"] = Client()
        return cast(Client, _defaults["sync"])


def default_async_client() -> AsyncClient:
    """The process-wide ``AsyncClient()``, made on first use."""
    with _defaults_lock:
        if "async" not in _defaults:
            _defaults["async"] = AsyncClient()
        return cast(AsyncClient, _defaults["async"])


def guard(
    client: Client | AsyncClient | None = None,
    tool: str | None = None,
    action: str | None = None,
    *,
    resource: ResourceSpec = "",
    params: ParamsSpec = None,
    context: ContextSpec = None,
    wait: float | None = None,
    on_decision: OnDecision | None = None,
) -> Callable[[F], F]:
    """Decorate a tool function (sync or ``async``) so that it runs only when
    Palisade allows the call.

    ``params``: a callable receiving the same arguments as the function and
    returning the parameters dict; or a list of argument names; or None to
    send every argument by name (a ``**kwargs`` argument is spread out,
    ``self``/``cls`` are left out). Errors raised while building the request
    propagate, and the function does not run.

    ``wait``: seconds to wait for a human approval; None raises
    ``ApprovalRequired`` at once. ``on_decision``: called with every
    decision (budgets remaining are in ``decision.obligations``).

    ``client``: a ``Client`` or an ``AsyncClient``; None uses the process's
    default one (``$PALISADE_SOCKET``). An ``async def`` function awaits an
    ``AsyncClient``, or runs a ``Client``'s blocking call in a worker
    thread; a plain function needs a ``Client``.
    """
    if not tool or not action:
        raise TypeError("guard: tool= and action= are required")

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)
        if isinstance(params, Sequence) and not isinstance(params, str):
            _check_names(fn, signature, params)
        elif isinstance(params, str):
            raise TypeError(f"guard({tool}.{action}): params must be a list of names, not a string")

        def ask(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            return dict(
                tool=tool,
                action=action,
                resource=resource(*args, **kwargs) if callable(resource) else resource,
                params=_params(signature, params, args, kwargs),
                context=context(*args, **kwargs) if callable(context) else context,
                wait=wait,
                on_decision=on_decision,
            )

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                request = ask(args, kwargs)
                await authorize_async(client, request)
                return await fn(*args, **kwargs)

            return cast(F, guarded_async)

        if isinstance(client, AsyncClient):
            raise TypeError(
                f"guard({tool}.{action}): {fn.__qualname__} is not async; guard it with a Client, "
                "not an AsyncClient"
            )

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            (client or default_client()).authorize(**ask(args, kwargs))
            return fn(*args, **kwargs)

        return cast(F, guarded)

    return decorate


async def authorize_async(client: Client | AsyncClient | None, request: dict[str, Any]) -> None:
    """``authorize`` from a coroutine, whichever client it is."""
    if isinstance(client, Client):
        await asyncio.to_thread(functools.partial(client.authorize, **request))
    else:
        await (client or default_async_client()).authorize(**request)


def _arguments(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by name, defaults applied, ``**kwargs`` spread
    out, a leading ``self``/``cls`` left out. Raises ``TypeError`` for
    arguments the function would not accept."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    out: dict[str, Any] = {}
    for i, (name, value) in enumerate(bound.arguments.items()):
        kind = signature.parameters[name].kind
        if i == 0 and name in ("self", "cls"):
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            out[name] = list(value)
        else:
            out[name] = value
    return out


def _params(
    signature: inspect.Signature, spec: ParamsSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Mapping[str, Any]:
    if callable(spec):
        return spec(*args, **kwargs)
    arguments = _arguments(signature, args, kwargs)
    if spec is None:
        return arguments
    return {name: arguments[name] for name in spec if name in arguments}


def _check_names(fn: Callable[..., Any], signature: inspect.Signature, names: Sequence[str]) -> None:
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    unknown = [n for n in names if n not in signature.parameters]
    if unknown and not accepts_any:
        raise TypeError(
            f"guard: {fn.__qualname__} has no argument {', '.join(map(repr, unknown))} "
            f"(it takes {', '.join(signature.parameters)})"
        )
