# custodes default attestation policy for GPU-class evidence (policy id "default_gpu").
#
# Input: the annotated evidence of one GPU verified locally by custodes' NVIDIA verifier:
#   input.nvidia = {"arch": "Hopper", "uuid", "measurements": {"<index>": "<hex>"},
#                   "config": {"driver_version", "vbios_version", "nvdec0_status", ...}}
# By the time this policy runs the verifier has checked the device certificate chain to
# NVIDIA's pinned root, the FWID, the report signature and the nonce binding; a report that
# fails any of those never reaches a policy.
#
# A Hopper report has no debug or secure-boot bit. As NVIDIA's own verifiers do ("secboot" and
# "dbgstat" follow the measurement comparison), secure boot with debug disabled is established
# by every golden measurement matching: a GPU in a debug or developer mode, or running
# firmware other than the golden, measures differently and is not affirming.
#
# Reference values (all lists; nothing is trusted until the workload admin registers them):
#   allowed_driver_versions   e.g. ["550.90.07"]
#   allowed_vbios_versions    e.g. ["96.00.9f.00.01"]
#   nvidia_gpu_measurements   golden measurements as "<index>:<hex>" strings, e.g.
#                             ["2:8048df…", "3:164f44…"]; an index may be listed more than
#                             once (alternatives). Every listed index must match; one malformed
#                             entry makes nothing match. As NVIDIA's verifier, measurement 36
#                             (RIM index 35, NVDEC0) is not compared when the GPU reports NVDEC0
#                             disabled.
#   nvidia_rim/vbios/<version>, nvidia_rim/driver/<version>
#                             golden measurements in the same form, registered from NVIDIA's
#                             signed RIMs (`swid` messages, `custodes rv nvidia-rim`): read for
#                             the GPU's own VBIOS and driver versions (lower case). A registered
#                             RIM also approves its version. RIMs are used in pairs, as NVIDIA's
#                             verifier does: one alone (no admin list either) matches nothing,
#                             and an index both RIMs measure matches nothing.
#
# Upstream's default_gpu reads the claims of NVIDIA's remote service (NRAS, "x-nvidia-*");
# custodes verifies locally, so this policy reads the local verifier's claims instead.

package policy

import rego.v1

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

rv(id) := query_reference_value(id)

accepted(value, id) if value in rv(id)

# Genuine NVIDIA hardware: the verifier accepted the device's identity chain.
hardware := 2 if {
	input.nvidia.arch == "Hopper"
}

golden_entry(entry) := [parts[0], lower(parts[1])] if {
	is_string(entry)
	parts := split(entry, ":")
	count(parts) == 2
	regex.match(`^[0-9]+$`, parts[0])
	regex.match(`^[0-9a-fA-F]+$`, parts[1])
}

default admin_golden := []

admin_golden := value if {
	value := rv("nvidia_gpu_measurements")
	is_array(value)
}

# The golden values of the RIM registered for this GPU's VBIOS or driver version, if any.
rim_golden(component, version) := value if {
	is_string(version)
	value := rv(sprintf("nvidia_rim/%s/%s", [component, lower(version)]))
	is_array(value)
}

rim_registered(component, version) if count(rim_golden(component, version)) > 0

default vbios_rim := []

vbios_rim := rim_golden("vbios", input.nvidia.config.vbios_version)

default driver_rim := []

driver_rim := rim_golden("driver", input.nvidia.config.driver_version)

golden_list := array.concat(admin_golden, array.concat(vbios_rim, driver_rim))

rim_indices(list) := {pair[0] | some entry in list; pair := golden_entry(entry)}

# NVIDIA's verifier refuses a driver and a VBIOS RIM that both measure one index.
rim_conflict if {
	some index in rim_indices(vbios_rim)
	index in rim_indices(driver_rim)
}

# One RIM alone leaves the other component's measurements unchecked.
rim_half_missing if {
	count(admin_golden) == 0
	count(vbios_rim) == 0
	count(driver_rim) > 0
}

rim_half_missing if {
	count(admin_golden) == 0
	count(driver_rim) == 0
	count(vbios_rim) > 0
}

golden := {golden_entry(entry) | some entry in golden_list}

golden_indices := {pair[0] | some pair in golden}

well_formed_golden if {
	every entry in golden_list {
		golden_entry(entry)
	}
}

skipped(index) if {
	index == "36"
	input.nvidia.config.nvdec0_status == "disabled"
}

index_matches(index) if skipped(index)

index_matches(index) if {
	[index, lower(input.nvidia.measurements[index])] in golden
}

# The golden indices whose measurement is none of the golden values (shown in denials).
mismatched_indices := {index | some index in golden_indices; not index_matches(index)}

measurements_match if {
	well_formed_golden
	count(golden_indices) > 0
	count(mismatched_indices) == 0
	not rim_conflict
	not rim_half_missing
}

driver_accepted if accepted(input.nvidia.config.driver_version, "allowed_driver_versions")

driver_accepted if rim_registered("driver", input.nvidia.config.driver_version)

vbios_accepted if accepted(input.nvidia.config.vbios_version, "allowed_vbios_versions")

vbios_accepted if rim_registered("vbios", input.nvidia.config.vbios_version)

# Only the golden firmware and software was measured.
executables := 3 if {
	measurements_match
	driver_accepted
	vbios_accepted
}

# Secure boot, debug disabled (see above).
configuration := 2 if {
	measurements_match
}
