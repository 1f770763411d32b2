"""Suggested reference values (trust on first use) for the shipped ``default_cpu`` policy.

Each suggestion is checked the way the broker would judge it: the policy is evaluated again,
unmodified, with the suggested values, and must then affirm what reference values decide; a
condition no reference value decides (``debug == false``) gets no value and stays failed.
"""

from __future__ import annotations

from custodes.attestation.ear import Ar4siStatus, appraisal_status, validate_trust_claims
from custodes.attestation.service import annotated_evidence
from custodes.policy.defaults import default_policy
from custodes.policy.engine import RegoEngine
from custodes.policy.explain import explain, reference_value_reader
from custodes.policy.suggest import suggest
from custodes.types.json import Json, JsonObject
from custodes.types.tee import Tee

CPU = default_policy("default_cpu")
CLAIMS = ["executables", "hardware", "configuration"]
SAMPLE: JsonObject = {
    "svn": "1",
    "report_data": "AAAA",
    "launch_digest": "abcde",
    "platform_version": {"major": 1, "minor": 4},
    "debug": False,
}


def _annotated(tee: Tee, claims: JsonObject) -> JsonObject:
    return annotated_evidence(tee, claims, init_data_claims=None, runtime_data_claims={})


def _vector(annotated: JsonObject, rv: dict[str, Json]) -> dict[str, int]:
    value = RegoEngine.evaluate(
        CPU, "data.policy.trust_claims", input=annotated, builtins=reference_value_reader(rv)
    )
    return validate_trust_claims(value)


def test_sample_from_nothing_to_affirming_with_typed_values() -> None:
    annotated = _annotated(Tee.SAMPLE, SAMPLE)
    values = suggest(CPU, CLAIMS, input=annotated, reference_values={})
    assert values == {
        "launch_digest": ["abcde"],
        "major_version": 1,  # a number, compared with ==: the value itself
        "minimum_minor_version": 4,  # the machine's own minor version (>=)
        "svn": ["1"],  # a string, in a list (accepted(x, id) is membership)
    }
    assert appraisal_status(_vector(annotated, values)) is Ar4siStatus.AFFIRMING


def test_without_suggestions_it_is_not_affirming() -> None:
    assert appraisal_status(_vector(_annotated(Tee.SAMPLE, SAMPLE), {})) is not (
        Ar4siStatus.AFFIRMING
    )


def test_values_in_force_are_kept_and_only_changes_suggested() -> None:
    current: dict[str, Json] = {
        "svn": ["2"],
        "launch_digest": ["abcde"],
        "major_version": 1,
        "minimum_minor_version": 0,
    }
    values = suggest(CPU, CLAIMS, input=_annotated(Tee.SAMPLE, SAMPLE), reference_values=current)
    # The accepted list grows (the machine already trusted stays trusted); nothing else moves.
    assert values == {"svn": ["2", "1"]}


def test_a_condition_no_reference_value_decides_gets_no_value() -> None:
    annotated = _annotated(Tee.SAMPLE, {**SAMPLE, "debug": True})
    values = suggest(CPU, CLAIMS, input=annotated, reference_values={})
    assert "debug" not in str(values)
    vector = _vector(annotated, values)
    assert vector["configuration"] == 36 and vector["hardware"] == 2
    (still,) = explain(CPU, ["configuration"], input=annotated)
    assert still.condition == "input.sample.debug == false"


SNP: JsonObject = {
    "measurement": "aa" * 48,
    "reported_tcb_bootloader": 10,
    "reported_tcb_microcode": 25,
    "reported_tcb_snp": 23,
    "reported_tcb_tee": 0,
    "policy_debug_allowed": False,
    "policy_migrate_ma": False,
    "platform_smt_enabled": True,
    "platform_tsme_enabled": False,
    "policy_abi_major": 0,
    "policy_abi_minor": 31,
    "policy_single_socket": False,
    "policy_smt_allowed": True,
}


def test_snp_every_value_of_the_helpers_too() -> None:
    annotated = _annotated(Tee.SNP, SNP)
    # Configuration is 3 (affirming) already; ask for all three to reach 2 as well.
    values = suggest(CPU, CLAIMS, input=annotated, reference_values={})
    assert values == {
        "snp_bootloader": [10],
        "snp_guest_abi_major": 0,
        "snp_guest_abi_minor": 31,
        "snp_launch_measurement": ["aa" * 48],
        "snp_microcode": [25],
        "snp_single_socket": False,
        "snp_smt_allowed": True,
        "snp_smt_enabled": True,
        "snp_snp_svn": [23],
        "snp_tee_svn": [0],
        "snp_tsme_enabled": False,
    }
    vector = _vector(annotated, values)
    assert (vector["executables"], vector["hardware"], vector["configuration"]) == (3, 2, 2)


TDX: JsonObject = {
    "quote": {
        "header": {"tee_type": "81000000", "vendor_id": "939a7233f79c4ca9940a0db3957f0607"},
        "body": {"mr_td": "11" * 48, "rtmr_1": "22" * 48, "rtmr_2": "33" * 48, "xfam": "e7"},
    },
    "td_attributes": {"debug": False},
    "tcb_status": "UpToDate",
    "collateral_expiration_status": "0",
    "uefi_event_logs": [
        {
            "type_name": "EV_EFI_BOOT_SERVICES_APPLICATION",
            "details": {"device_paths": ["File(kernel)"]},
            "digests": [{"alg": "SHA-384", "digest": "44" * 48}],
        },
        {
            "type_name": "EV_EVENT_TAG",
            "details": {"string": "LOADED_IMAGE::LoadOptions"},
            "digests": [{"alg": "SHA-384", "digest": "55" * 48}],
        },
    ],
}


def test_tdx_values_read_in_functions_and_event_log_iterations() -> None:
    annotated = _annotated(Tee.TDX, TDX)
    values = suggest(CPU, CLAIMS, input=annotated, reference_values={})
    assert values == {
        "mr_td": ["11" * 48],
        "rtmr_1": ["22" * 48],
        "rtmr_2": ["33" * 48],
        "tdvfkernel": "44" * 48,  # compared with == inside `some` iterations
        "tdvfkernelparams": "55" * 48,
        "xfam": ["e7"],
    }
    vector = _vector(annotated, values)
    assert (vector["executables"], vector["hardware"], vector["configuration"]) == (3, 2, 2)


def test_tpm_pcr11_and_the_attestation_key() -> None:
    annotated = _annotated(Tee.TPM, {"pcr11": "00" * 32, "ak_public": "PEM"})
    values = suggest(CPU, CLAIMS, input=annotated, reference_values={})
    assert values == {"tpm_pcr11": ["00" * 32], "trusted_aks": ["PEM"]}
    assert _vector(annotated, values)["executables"] == 3
