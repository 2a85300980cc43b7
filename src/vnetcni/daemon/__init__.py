"""vnetd: the node agent serving the plugins' verbs over a Unix socket, with warm handlers."""
