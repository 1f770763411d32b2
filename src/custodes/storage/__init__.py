"""Persistent state behind one interface: :class:`.base.Store`."""
