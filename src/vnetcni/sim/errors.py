"""The simulator's own failure: a readable message for the CLI, never a traceback."""


class SimError(Exception):
    """Setting up or tearing down part of the simulated VNet failed."""
