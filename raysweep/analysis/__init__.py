"""Analysis of a sweep's tables: the best-trial rule, gains, scaling fits, plots."""

from raysweep.analysis.core import *  # noqa: F401,F403  (split into rooms next)
from raysweep.analysis.core import InputError, Selection  # noqa: F401
