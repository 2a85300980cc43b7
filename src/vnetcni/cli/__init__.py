"""vnetctl, the operator's CLI."""
