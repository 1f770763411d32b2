"""What each dashboard page shows, read from the broker's own services and audit stream.

Handlers (:mod:`custodes.ui.routes`) stay thin: they authenticate, call one function of these
modules and render its result. These functions read the tenant's stores (resources' names and
sizes, never their values; policies; reference values) and its verified audit digest
(:mod:`custodes.ui.digest`). The one change the dashboard makes, activating a policy version,
goes through :func:`custodes.kbs.policy_activation.activate_policy`, the function behind
``POST …/resource-policy/<id>/activate``.

The modules, by view group: :mod:`.common` (the tenant view, errors, limits), :mod:`.activity`
(overview, activity lists, one entry), :mod:`.denials` (a denial, testing a draft on it),
:mod:`.stores` (reference values, resources, policies, the access matrix) and :mod:`.operator`
(the audit export, the operator's tenants).
"""
