"""The client-facing message catalogue under the name the serving layer has always used.

The catalogue itself lives in :mod:`i18n.messages`, below both ``auth/`` and ``serving/``, so the
account routes use it without importing the serving layer.
"""

from i18n.messages import *  # noqa: F403  (every entry, Message, Template, language, render, …)
