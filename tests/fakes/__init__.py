"""Servers that stand in, at the wire, for what cannot run here (DESIGN.md, rule 10)."""
