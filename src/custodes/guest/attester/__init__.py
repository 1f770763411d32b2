"""Evidence collection, one module per TEE, behind :class:`.base.Attester`."""
