"""Governance records: the hash-chained, signed audit log and what reads it. The broker writes
it (so this package sits below :mod:`custodes.kbs` and imports nothing of it); the offline
access analysis of a cluster is :mod:`custodes.k8s.access`."""
