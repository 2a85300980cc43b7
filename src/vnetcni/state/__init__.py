"""Durable node state: versioned JSON documents written atomically under a kernel lock."""
