"""Leaf package of shared value types; imports nothing from custodes except ``errors``."""
