"""Governance records: the hash-chained, signed audit log and what reads it; and the access
matrix (:mod:`.rbac`, :mod:`.access_matrix`, :mod:`.render`): who can obtain which workload
secret in plaintext, and how."""
