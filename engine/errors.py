"""Every error buddy raises (re-exported from :mod:`buddy.rules.base.errors`, the base layer)."""

from buddy.rules.base.errors import *  # noqa: F403
from buddy.rules.base.errors import __all__ as __all__
