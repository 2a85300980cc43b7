"""Pod packet capture and hop-by-hop trace: find a pod's interfaces from our endpoint records (or
by discovery for other CNIs' pods), run tcpdump there, and tell where a flow was seen."""
