"""Gatehouse composition root: settings, certificates, the `gatehouse` command."""
