# custodes attestation policy for a TPM-attested VM with UEFI measured boot (policy id of your
# choice; `custodes vm demo` installs it as "default_cpu").
#
# Input: the tpm verifier's claims (input.tpm), including input.tpm.measured_boot, which the
# verifier fills only after the firmware event log replayed to the quoted PCRs (see
# custodes.attestation.eventlog.measured_boot). Reference values (lists of accepted values),
# computed from the artifacts by `custodes rv measured-boot` except the firmware's:
#   trusted_aks                  AKs enrolled through the EK (or listed by the admin)
#   measured_boot_firmware       replayed PCR 0 of the approved firmware (a recorded boot)
#   measured_boot_kernel         Authenticode SHA-256 of the kernel as the firmware loaded it
#   measured_boot_initrd         SHA-256 of the initrd
#   measured_boot_cmdline        SHA-256 of the kernel command line (UTF-16LE load options)
#   measured_boot_secure_boot    accepted Secure Boot states (true / false)
#
# One condition per measurement, so that a denial explanation names the one that failed.
# Anything unknown, absent or unmatched leaves the pessimistic defaults: not affirming.

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

# Hardware: a TPM whose AK the broker trusts, running the approved firmware.
hardware := 2 if {
	input.tpm
	accepted(input.tpm.ak_public, "trusted_aks")
	accepted(input.tpm.measured_boot.firmware.pcr0, "measured_boot_firmware")
}

# Executables: exactly one boot application (the kernel), the approved kernel, initrd and
# command line.
executables := 3 if {
	input.tpm
	count(input.tpm.measured_boot.boot_applications) == 1
	accepted(input.tpm.measured_boot.kernel, "measured_boot_kernel")
	accepted(input.tpm.measured_boot.initrd, "measured_boot_initrd")
	accepted(input.tpm.measured_boot.kernel_cmdline, "measured_boot_cmdline")
}

# Configuration: the approved Secure Boot state.
configuration := 2 if {
	input.tpm
	accepted(input.tpm.measured_boot.secure_boot.enabled, "measured_boot_secure_boot")
}
