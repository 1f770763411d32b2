# custodes default attestation policy for CPU-class evidence (policy id "default_cpu").
#
# Input: the annotated evidence of one CPU TEE, keyed by its wire name ("sample", "snp",
# "tdx", "az-snp-vtpm", "az-tdx-vtpm", "tpm", "se"), plus init_data, init_data_claims,
# report_data and runtime_data_claims. Reference values come from the RVPS through the
# builtin query_reference_value(id), which yields null for an unknown or expired id.
#
# Output: `trust_claims` (AR4SI trustworthiness vector) and `extensions` (added to the EAR
# appraisal). The claim values and reference-value ids are those of Trustee's default CPU
# policy, so reference values provisioned for Trustee work unchanged here. One deliberate
# difference: an ordering comparison (`>=`) against a reference value that is not a number
# never passes (in Rego `4 >= null` is true).
#
# Without reference values no TEE is "affirming": nothing is trusted until the workload admin
# says what to trust. Most end "contraindicated"; a TPM ends "warning" (hardware is affirmed
# unconditionally, as upstream, and executables stays 33), which the default resource policy
# refuses all the same.

package policy

import rego.v1

# Pessimistic starting point, AR4SI values:
#   executables 33   runtime holds executables that are not recognised
#   hardware 97      hardware/firmware not recognised
#   configuration 36 security-relevant configuration unavailable to the verifier
#   everything else 0 (no assertion)
default executables := 33

default hardware := 97

default configuration := 36

trust_claims := {
	"instance-identity": 0,
	"configuration": configuration,
	"executables": executables,
	"file-system": 0,
	"hardware": hardware,
	"runtime-opaque": 0,
	"storage-opaque": 0,
	"sourced-data": 0,
}

# Reference value by id (null when absent).
rv(id) := query_reference_value(id)

# `value` is listed in the reference value `id` (reference values are lists of accepted values).
accepted(value, id) if value in rv(id)

# Value 2 for hardware/configuration: genuine, approved. Value 3 for executables: only approved
# executables were loaded; for configuration: no known vulnerabilities. Value 4 (executables):
# approved kernel and command line, firmware events not checked (grub boot, e.g. GKE).

########## sample (proves nothing; for tests and demos only)

executables := 3 if {
	input.sample
	accepted(input.sample.launch_digest, "launch_digest")
}

hardware := 2 if {
	input.sample
	accepted(input.sample.svn, "svn")
	input.sample.platform_version.major == rv("major_version")
	minimum := rv("minimum_minor_version")
	is_number(minimum)
	input.sample.platform_version.minor >= minimum
}

configuration := 2 if {
	input.sample
	input.sample.debug == false
}

########## AMD SEV-SNP

executables := 3 if {
	input.snp
	accepted(input.snp.measurement, "snp_launch_measurement")
}

hardware := 2 if {
	input.snp
	accepted(input.snp.reported_tcb_bootloader, "snp_bootloader")
	accepted(input.snp.reported_tcb_microcode, "snp_microcode")
	accepted(input.snp.reported_tcb_snp, "snp_snp_svn")
	accepted(input.snp.reported_tcb_tee, "snp_tee_svn")
}

snp_guest_locked_down if {
	input.snp.policy_debug_allowed == false
	input.snp.policy_migrate_ma == false
}

snp_platform_as_expected if {
	input.snp.platform_smt_enabled == rv("snp_smt_enabled")
	input.snp.platform_tsme_enabled == rv("snp_tsme_enabled")
	input.snp.policy_abi_major == rv("snp_guest_abi_major")
	input.snp.policy_abi_minor == rv("snp_guest_abi_minor")
	input.snp.policy_single_socket == rv("snp_single_socket")
	input.snp.policy_smt_allowed == rv("snp_smt_allowed")
}

configuration := 2 if {
	input.snp
	snp_guest_locked_down
	snp_platform_as_expected
} else := 3 if {
	input.snp
	snp_guest_locked_down
}

########## Intel TDX

tdx_boot_chain_as_expected if {
	accepted(input.tdx.quote.body.rtmr_1, "rtmr_1")
	accepted(input.tdx.quote.body.rtmr_2, "rtmr_2")
}

# The firmware event log shows the expected kernel image and the expected kernel command line.
tdx_kernel_events_as_expected if {
	some kernel in input.tdx.uefi_event_logs
	kernel.type_name == "EV_EFI_BOOT_SERVICES_APPLICATION"
	"File(kernel)" in kernel.details.device_paths
	some kernel_digest in kernel.digests
	kernel_digest.digest == rv("tdvfkernel")

	some params in input.tdx.uefi_event_logs
	params.type_name == "EV_EVENT_TAG"
	params.details.string == "LOADED_IMAGE::LoadOptions"
	some params_digest in params.digests
	params_digest.digest == rv("tdvfkernelparams")
}

executables := 3 if {
	input.tdx
	tdx_boot_chain_as_expected
	tdx_kernel_events_as_expected
} else := 4 if {
	input.tdx
	tdx_boot_chain_as_expected
}

# A TDX quote (TEE type 0x81) from Intel's quoting enclave, with the expected TD firmware.
tdx_quote_genuine(quote) if {
	quote.header.tee_type == "81000000"
	quote.header.vendor_id == "939a7233f79c4ca9940a0db3957f0607"
	accepted(quote.body.mr_td, "mr_td")
}

hardware := 2 if {
	input.tdx
	tdx_quote_genuine(input.tdx.quote)
	input.tdx.tcb_status == "UpToDate"
	input.tdx.collateral_expiration_status == "0"
}

configuration := 2 if {
	input.tdx
	input.tdx.td_attributes.debug == false
	accepted(input.tdx.quote.body.xfam, "xfam")
}

########## Azure confidential VM, SEV-SNP with a paravisor vTPM (claim values are strings)

executables := 3 if {
	vm := input["az-snp-vtpm"]
	accepted(vm.measurement, "measurement")
	accepted(vm.tpm.pcr11, "snp_pcr11")
}

hardware := 2 if {
	vm := input["az-snp-vtpm"]
	accepted(vm.reported_tcb_bootloader, "tcb_bootloader")
	accepted(vm.reported_tcb_microcode, "tcb_microcode")
	accepted(vm.reported_tcb_snp, "tcb_snp")
	accepted(vm.reported_tcb_tee, "tcb_tee")
}

configuration := 2 if {
	vm := input["az-snp-vtpm"]
	accepted(vm.platform_smt_enabled, "smt_enabled")
	accepted(vm.platform_tsme_enabled, "tsme_enabled")
	accepted(vm.policy_abi_major, "abi_major")
	accepted(vm.policy_abi_minor, "abi_minor")
	accepted(vm.policy_single_socket, "single_socket")
	accepted(vm.policy_smt_allowed, "smt_allowed")
}

########## Azure confidential VM, TDX with a paravisor vTPM

executables := 3 if {
	vm := input["az-tdx-vtpm"]
	accepted(vm.tpm.pcr11, "tdx_pcr11")
}

hardware := 2 if {
	vm := input["az-tdx-vtpm"]
	tdx_quote_genuine(vm.quote)
	vm.tcb_status == "UpToDate"
}

configuration := 2 if {
	vm := input["az-tdx-vtpm"]
	accepted(vm.quote.body.xfam, "xfam")
}

########## TPM (the verifier checked the quote; the attestation key must be a trusted one)

hardware := 2 if input.tpm

executables := 3 if {
	input.tpm
	accepted(input.tpm.pcr11, "tpm_pcr11")
	accepted(input.tpm.ak_public, "trusted_aks")
}

configuration := 0 if input.tpm

########## IBM Secure Execution: the verifier checks measurements, signatures and user data,
########## so evidence that reached the policy is trusted as a whole.

executables := 3 if input.se

hardware := 2 if input.se

configuration := 2 if input.se

########## Extensions: the workload identifiers bound by the init-data (Kata agent policy)

extensions := [{
	"name": "ear.trustee.identifiers",
	"key": -18,
	"value": {"validated": validated_identifiers},
}]

agent_policy_containers := object.get(input, ["init_data_claims", "agent_policy_claims", "containers"], [])

container_images := [image |
	some container in agent_policy_containers
	image := container.OCI.Annotations["io.kubernetes.cri.image-name"]
]

container_uids := [uid |
	some container in agent_policy_containers
	uid := container.OCI.Process.User.UID
]

# Only the non-empty lists are reported.
validated_identifiers[name] := values if {
	some name, values in {"container_images": container_images, "container_uids": container_uids}
	count(values) > 0
}
