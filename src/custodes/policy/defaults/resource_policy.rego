# custodes default resource policy (id "resource-policy").
#
# Input: the claims of a verified EAR token. Data: {"plugin", "resource-path", "query"}.
#
# A resource is released only when every appraisal in the token is "affirming", i.e. the
# attestation policy recognised the hardware, the executables and the configuration. Trustee's
# shipped default instead releases to any TEE other than "sample" whatever its appraisal, so a
# TEE that verified cryptographically but runs unknown code would get every secret; custodes
# does not.

package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	is_object(input.submods)
	count(input.submods) > 0
	every _, appraisal in input.submods {
		appraisal["ear.status"] == "affirming"
	}
}
