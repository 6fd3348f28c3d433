"""The builtin function registry (spec §1.5): name -> :class:`FunctionSpec`.

Not provided: ``timewindow`` (Lytics' ``[]timebucket`` field type has no counterpart in our
profiles), ``useragent*``, ``json.jmespath``, ``uuid`` (non-deterministic), ``hash.sip``,
``maptime``, ``filter``/``filtermatch``/``match`` (need the whole message context); the parser
rejects them as unknown functions.
"""

from __future__ import annotations

from .functions_logic import LOGIC_FUNCTIONS
from .functions_text import TEXT_FUNCTIONS
from .functions_time import TIME_FUNCTIONS
from .registry import FunctionSpec

FUNCTIONS: dict[str, FunctionSpec] = {**LOGIC_FUNCTIONS, **TEXT_FUNCTIONS, **TIME_FUNCTIONS}
