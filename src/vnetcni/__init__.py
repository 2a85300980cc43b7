"""vnet-cni: VNet pod networking for Kubernetes (pods get their node's secondary VNet addresses)."""

__version__ = "0.1.0"
