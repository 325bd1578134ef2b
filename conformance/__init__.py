"""batchspec: a conformance test kit for batch HTTP APIs.

The public API: load a profile, run the suites against its target, get one report model that the
CLI, plain pytest and the report writers all share.
"""
from ._catalogue import Catalogue, Rule
from ._catalogue import load as load_catalogue
from ._client import SetupError, Target
from ._engine import RunContext, run
from ._envelope import Envelope, Result
from ._model import CheckOutcome, Exchange, RuleResult, RunReport, Verdict
from ._profile import Profile, ProfileError
from ._profile import bundled as bundled_profile
from ._profile import load as load_profile
from ._profile import loads as loads_profile
from ._transport import ASGIThreadTransport
from .checks import RuleViolation, expect
from .reports import write_all as write_reports

__all__ = [
    "ASGIThreadTransport",
    "Catalogue",
    "CheckOutcome",
    "Envelope",
    "Exchange",
    "Profile",
    "ProfileError",
    "Result",
    "Rule",
    "RuleResult",
    "RuleViolation",
    "RunContext",
    "RunReport",
    "SetupError",
    "Target",
    "Verdict",
    "bundled_profile",
    "expect",
    "load_catalogue",
    "load_profile",
    "loads_profile",
    "run",
    "write_reports",
]
