"""Python client of Palisade's local decision API.

Ask the daemon before every tool call, from a process it has enrolled
(``palisade exec --identity ID -- python3 agent.py``)::

    from palisade_client import Client, guard

    client = Client()   # $PALISADE_SOCKET or /run/palisade/palisade.sock

    @guard(client, tool="stripe", action="create_payment")
    def create_payment(amount: float, currency: str, customer: str) -> str: ...

Fail closed: the function runs only on the daemon's ALLOW. A DENY, a pending
approval, an unreachable daemon or any other error raise ``PalisadeDenied``
(``ApprovalRequired`` is a subclass) and the function does not run.
"""

from .client import DEFAULT_SOCKET, DEFAULT_TIMEOUT, SOCKET_ENV, Client
from .errors import ApprovalRequired, PalisadeDenied, PalisadeError
from .guard import guard
from .models import Approval, ApprovalState, Decision, EgressGrant, Obligation, Token, Verdict

__all__ = [
    "DEFAULT_SOCKET",
    "DEFAULT_TIMEOUT",
    "SOCKET_ENV",
    "Approval",
    "ApprovalRequired",
    "ApprovalState",
    "Client",
    "Decision",
    "EgressGrant",
    "Obligation",
    "PalisadeDenied",
    "PalisadeError",
    "Token",
    "Verdict",
    "guard",
]
