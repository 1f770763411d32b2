"""Errors of the Kubernetes tooling: one class per way a manifest, a webhook configuration or
an AdmissionReview is refused."""

from __future__ import annotations

from custodes.errors import ConfigError, MalformedMessage


class ManifestError(ConfigError):
    """An input manifest cannot be used: not YAML, not an object, a kind or field we refuse."""

    code = "k8s-manifest"


class ManifestSchemaError(ManifestError):
    """An object does not validate against the Kubernetes JSON schema of its kind."""

    code = "k8s-schema"


class EntrypointUnknown(ManifestError):
    """``custodes run`` cannot wrap a container whose command is the image's ENTRYPOINT."""

    code = "k8s-entrypoint-unknown"


class SecretSourceError(ManifestError):
    """A secret value, key or name cannot be sealed (bad key, duplicate, unreadable file)."""

    code = "k8s-secret-source"


class InventoryError(ConfigError):
    """A cluster dump for the access analysis cannot be used: not YAML, an object without a
    kind, a field of the wrong type or missing."""

    code = "k8s-inventory"


class WebhookConfigError(ConfigError):
    """The webhook configuration file is invalid."""

    code = "k8s-webhook-config"


class AdmissionReviewError(MalformedMessage):
    """A request body is not an AdmissionReview v1 the webhook can answer (HTTP 400)."""

    code = "k8s-admission-review"
