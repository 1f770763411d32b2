"""Rego policies: the engine adapter, the policy store and the shipped default policies."""
