"""The dashboard: server-rendered pages for the workload admin, the auditor and the broker
operator, served by the broker itself (``/ui``, ``/tenants/<tenant>/ui``, ``/operator/ui``).
Why there and not in a local proxy holding the admin's key: docs/dashboard.md."""
