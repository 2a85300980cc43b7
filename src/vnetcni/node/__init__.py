"""The node: its layout (state directory, socket, files), decided in one place."""
