"""A minimal CRI client (runtime.v1 over gRPC), as kubelet speaks to containerd."""

from .client import CRIClient, CRIError

__all__ = ["CRIClient", "CRIError"]
