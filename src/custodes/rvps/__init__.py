"""Reference Value Provider Service: reference values with provenance and enforced expiry."""
