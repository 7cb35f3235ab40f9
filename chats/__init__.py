"""Conversations from files and the hub, in every format harvest reads (floor 1)."""
