"""`vnetctl bench`: vnet-cni and the reference plugins, side by side, in one run on one machine."""
