"""The simulated VNet: a fabric namespace, node namespaces with their own metadata service, pods
created through each node's CNI chain by a small runtime (see docs/simulator.md)."""
