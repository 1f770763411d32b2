"""What a TEE pod's Kata agent policy lets the untrusted side do, for the access analysis.

The policy is the ``policy.rego`` of the pod's init-data, read through the shared reader of
agent policies (:mod:`custodes.initdata.agent_policy`): rule heads and defaults come from the
compiled policy, never from a text search that a comment or a string could fool. Every
verdict's ``allowed`` means "this can expose the plaintext", and every doubt counts as
allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from custodes.initdata.agent_policy import AgentPolicyError, AgentPolicyModule, parse_agent_policy
from custodes.k8s.access.inputs import get_list_safe


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the agent policy lets one kind of request through, and why we think so."""

    allowed: bool
    why: str


def _has_rule(policy: AgentPolicyModule, name: str) -> bool:
    return name in policy.rules


def _default(policy: AgentPolicyModule, name: str) -> str | None:
    value = policy.defaults.get(name)
    return "true" if value is True else "false" if value is False else None


def _verdict(policy: AgentPolicyModule, name: str, extra: str = "") -> Verdict:
    default = _default(policy, name)
    rules = _has_rule(policy, name)
    if default == "false" and not rules:
        return Verdict(False, f"default {name} := false and no rule allows it")
    if default == "false":
        return Verdict(
            True,
            f"default {name} := false, but rules allow some requests{extra} "
            "(custodes does not evaluate them: assumed to allow)",
        )
    if default == "true":
        return Verdict(True, f"default {name} := true")
    if rules:
        return Verdict(True, f"{name} has rules but no default (assumed to allow)")
    return Verdict(True, f"the policy does not define {name} (assumed to allow)")


def _exec_allow_list(policy_data: object) -> list[str]:
    if not isinstance(policy_data, dict):
        return []
    found: list[object] = []
    found.extend(get_list_safe(policy_data, "allowed_commands"))
    defaults = policy_data.get("request_defaults")
    if isinstance(defaults, dict) and isinstance(defaults.get("ExecProcessRequest"), dict):
        request = defaults["ExecProcessRequest"]
        for key in ("allowed_commands", "commands", "regex"):
            found.extend(get_list_safe(request, key))
    containers = policy_data.get("containers")
    if isinstance(containers, list):
        for container in containers:
            if isinstance(container, dict):
                found.extend(get_list_safe(container, "exec_commands"))
    return [str(c) for c in found]


@dataclass(frozen=True, slots=True)
class AgentPolicy:
    """What a TEE pod's Kata agent policy (``policy.rego`` in its init-data) lets the
    untrusted side do. Every verdict's ``allowed`` means "this can expose the plaintext".

    Read from the compiled policy (:mod:`custodes.initdata.agent_policy`), conservative: a
    request counts as forbidden only with ``default <R> := false`` and no rule head for
    ``<R>``; a policy that reader refuses counts as allowing everything; containers count
    as pinned with ``default CreateContainerRequest := false`` (its rules, e.g. genpolicy's,
    are taken to allow only the workload's own containers). No init-data or no
    ``policy.rego`` means the guest image's default policy, assumed to allow everything."""

    source: str
    exec: Verdict  # ExecProcessRequest: kubectl exec, or the host calling the agent
    stdin: Verdict  # WriteStreamRequest: kubectl attach can drive the process
    set_policy: Verdict  # SetPolicyRequest: the host may replace the policy at run time
    any_container: Verdict  # CreateContainerRequest not pinned: any container may start

    @classmethod
    def unknown(cls, why: str) -> AgentPolicy:
        verdict = Verdict(True, why)
        return cls("none", verdict, verdict, verdict, verdict)

    @classmethod
    def from_rego(cls, text: str, policy_data: object) -> AgentPolicy:
        try:
            policy = parse_agent_policy(text)
        except AgentPolicyError as e:
            return cls.unknown(f"the agent policy is refused, assumed to allow ({e})")
        commands = _exec_allow_list(policy_data)
        extra = f" (allow-listed: {', '.join(commands)})" if commands else ""
        default_create = _default(policy, "CreateContainerRequest")
        if default_create == "false":
            any_container = Verdict(
                False,
                "default CreateContainerRequest := false: only the containers its rules "
                "allow may start (assumed to pin the workload's images and commands)",
            )
        else:
            any_container = _verdict(policy, "CreateContainerRequest")
        return cls(
            source="init-data policy.rego",
            exec=_verdict(policy, "ExecProcessRequest", extra),
            stdin=_verdict(policy, "WriteStreamRequest"),
            set_policy=_verdict(policy, "SetPolicyRequest"),
            any_container=any_container,
        )

    def host_exec(self) -> Verdict:
        """Exec from the host through the agent API (or after replacing the policy)."""
        if self.exec.allowed:
            return self.exec
        if self.set_policy.allowed:
            return Verdict(True, f"SetPolicyRequest is allowed ({self.set_policy.why})")
        return Verdict(False, f"{self.exec.why}; SetPolicyRequest is forbidden too")
