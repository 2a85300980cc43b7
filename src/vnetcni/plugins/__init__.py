"""The CNI plugins: `vnet` (main, bridge mode) and `vnet-ipam`, and their thin entry points."""
