"""The dataplane: links, addresses and routes on the node and in pod namespaces (netlink)."""
