"""Python client of Palisade's local decision API.

Ask the daemon before every tool call, from a process it has enrolled
(``palisade exec --identity ID -- python3 agent.py``)::

    from palisade_client import guard

    @guard(tool="stripe", action="create_payment")
    def create_payment(amount: float, currency: str, customer: str) -> str: ...

Fail closed: the function runs only on the daemon's ALLOW. A DENY, a pending
approval, an unreachable daemon or any other error raise ``PalisadeDenied``
(``ApprovalRequired`` is a subclass) and the function does not run.

``Client`` blocks; ``AsyncClient`` has the same methods as coroutines.
Framework adapters: ``palisade_client.langchain``, ``palisade_client.crewai``,
``palisade_client.openai_agents`` (each behind the extra of that name).
"""

from ._version import __version__
from .aio import AsyncClient
from .client import DEFAULT_SOCKET, DEFAULT_TIMEOUT, SOCKET_ENV, Client
from .errors import ApprovalRequired, PalisadeDenied, PalisadeError
from .guard import default_async_client, default_client, guard
from .models import Approval, ApprovalState, Decision, EgressGrant, Obligation, Token, Verdict

__all__ = [
    "__version__",
    "DEFAULT_SOCKET",
    "DEFAULT_TIMEOUT",
    "SOCKET_ENV",
    "Approval",
    "ApprovalRequired",
    "ApprovalState",
    "AsyncClient",
    "Client",
    "Decision",
    "EgressGrant",
    "Obligation",
    "PalisadeDenied",
    "PalisadeError",
    "Token",
    "Verdict",
    "default_async_client",
    "default_client",
    "guard",
]
