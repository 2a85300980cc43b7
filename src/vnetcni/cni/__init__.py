"""The CNI contract: invocations, configuration, results, errors and verb dispatch.

Standard library only and cheap to import: this package is on every plugin call.
"""
