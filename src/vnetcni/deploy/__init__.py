"""Putting vnet-cni on a node from its image: the front doors copied into the host's CNI bin
directory (the DaemonSet's install-cni init container), the conflist vnetd writes once it serves,
the probes that ask vnetd over its socket, and uninstall."""
