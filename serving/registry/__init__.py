"""The task registry: a named async Ray actor, one per application, as collaborators with one job each.

- :mod:`.ids` — task ids, result names, the actor's name and code version (no Ray: the ingress's).
- :mod:`.interface` — the registry's methods, once: what the actor, the core, the ingress's client
  and the tests' stand-in are checked against.
- :mod:`.actor` — the Ray actor :class:`~.actor.TaskRegistry` around the core, its creation and lookup.
- :mod:`.core` — :class:`~.core.RegistryCore`, the task life cycle: creation, dispatch, reports from
  replicas, cancel, recovery, clean-up, orchestrating the collaborators below.
- :mod:`.task` — a live task in memory and the model requests it is run as.
- :mod:`.queue` — counters kept in step with every status change, fair order, positions, depth.
- :mod:`.saver` — every status change written through the writer thread, retried until stored.
- :mod:`.feed` — the events: each task's latest of each kind, the journal the ingresses poll, webhooks.
- :mod:`.retention` — which finished tasks memory keeps, and old records deleted with their files.
- :mod:`.replicas` — what each model replica last reported.

This file imports nothing, so that importing :mod:`.ids` does not bring Ray in.
"""
