"""Kubernetes: confidential manifests, the admission webhook, and what they share.

The workload admin turns plain manifests into confidential ones; the cluster admin applies
them and can read nothing of value in them; the webhook refuses pods in confidential
namespaces that would read a plain Secret or talk to a broker not the tenant's.

- :mod:`.yamlio`: strict multi-document YAML in and out;
- :mod:`.workloads`: where a workload kind keeps its pod template;
- :mod:`.schema`: validation against the Kubernetes JSON schemas;
- :mod:`.secret`: Secret manifests that hold only sealed values;
- :mod:`.guestconfig`: the init-data (``aa.toml``, ``cdh.toml``) naming the tenant's broker;
- :mod:`.pod`: making a workload confidential (runtime class, init-data, ``custodes run``);
- :mod:`.podcheck`: the rules a pod in a confidential namespace must follow;
- :mod:`.webhook_config`, :mod:`.admission`, :mod:`.webhook`: the admission webhook.
- :mod:`.access`: the offline access analysis of a cluster dump (who can obtain which
  workload secret in plaintext), behind ``custodes audit access-matrix``.

See ``docs/kubernetes.md``.
"""
