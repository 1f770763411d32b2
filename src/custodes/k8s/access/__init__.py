"""The access analysis, offline: who can obtain which workload secret in plaintext, and how.

Input is what ``kubectl get clusterroles,clusterrolebindings,roles,rolebindings,pods,secrets
-A -o yaml`` prints (a ``v1`` ``List``; several files and multi-document YAML are accepted;
Namespaces, workload controllers and their pod templates are used when present).

**Columns** are the workload secrets: every Secret a pod (or pod template) reads through
``env``, ``envFrom`` or a (projected) volume, as one *plain* column for its plain keys; and
every ``sealed.…`` value in any Secret's data, as one *sealed* column per key. Sealed values
are custodes (CoCo) sealed secrets: a pointer to a resource that only the broker releases,
and only to an attested TEE.

**Rows** are the three administrative roles of seed ``003`` (infrastructure admin, cluster
admin, one workload admin per workload namespace) and every User, Group and ServiceAccount
that a binding names or a pod runs as.

**Cells**: ``plaintext via <path>`` (every path is kept, the shortest chain first), ``sealed:
TEE only`` (the principal reaches the secret, but only in its sealed form: plaintext exists
only in the broker and inside attested TEEs), or ``no``.

Paths, per principal, then closed over "can act as" edges (impersonation, service-account
tokens, running a pod as a service account, node access, certificate approval):

* ``secrets/get|list|watch|update|patch`` on the Secret (``resourceNames`` honoured; an
  update or patch returns the object, data included);
* ``pods/exec`` (``create`` or ``get``: the websocket upgrade is authorised as ``get``),
  ``pods/attach`` (containers with ``stdin``), ``nodes/proxy`` (the kubelet's exec), into a
  pod whose container holds it; ``pods`` update/patch and ``pods/ephemeralcontainers`` (swap
  the image, add a container);
* creating a pod, or a controller that creates one, in the Secret's namespace (it may mount
  any Secret there); patching an existing controller's template;
* node access (``etcd``, ``node-disk``: the kubelet's volumes and the container spec's env,
  ``node-memory``: a non-TEE pod's memory; for TEE pods the agent API): the infrastructure
  admin has it unless the cluster is a Confidential Cluster; anyone else through a
  privileged pod (where Pod Security admits one), exec into a privileged pod, or
  ``nodes/proxy`` to one. Node access is taken to include a control-plane node (etcd, the
  cluster CA key), i.e. it makes one a cluster admin; this is conservative for managed
  control planes;
* ``broker``: the workload admin stores the sealed secret in their broker.

For a sealed value used by a TEE pod, exec, attach, pod replacement and pod creation yield
the plaintext only where that pod's init-data agent policy lets them (see
:class:`~.agent_policy.AgentPolicy`), and only under the stated assumption that the broker
binds release to the pods' init-data. Every assumption is listed in
:attr:`.model.Matrix.assumptions` and in ``docs/access-matrix.md``. Secret values are never
read beyond the ``sealed.`` prefix and the sealed pointer, and never printed.

The modules, in the order the data flows: :mod:`.inputs` (the dumps, through the strict YAML
loader), :mod:`.rbac` (roles, bindings, the authorizer's matching), :mod:`.agent_policy` (what a
TEE pod's agent policy allows), :mod:`.inventory` (workloads and Secrets), :mod:`.model` (the
options and the matrix), :mod:`.capabilities` (what a principal can do and whom it can act
as), :mod:`.analysis` (the paths to each secret; :func:`~.analysis.build_matrix` is the entry
point) and :mod:`.render` (table, Markdown, JSON, HTML). ``custodes audit access-matrix``
(:mod:`custodes.cli.access`) is its command.
"""
