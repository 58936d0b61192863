"""Client-facing messages in the service's two languages (:mod:`i18n.messages`, the catalogue).

Below the web layers on purpose: ``auth/`` and ``serving/`` both import it; it imports only the
model-kind table (``models.kinds``, pure Python).
"""
