"""The node's address pool: metadata parsing and sources, the pure allocator, the durable IPAM
store, the `vnet-ipam` handlers and the metadata HTTP server.

Kept cheap to import (standard library + defusedxml): it is on every plugin call.
"""
