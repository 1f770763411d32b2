"""A real virtual machine for custodes: QEMU, OVMF, a swtpm vTPM with an EK certificate from a
local test CA, the Debian kernel and a project-built initramfs whose workload runs under
``custodes run`` (see docs/vm.md)."""
