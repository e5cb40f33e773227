"""Conversion of other products' configuration into directory entries (dcm4chee-arc, mercure)."""
