"""The `vnet-ipam` executable: a thin front door to the IPAM handlers (vnetcni.ipam.plugin)."""

from __future__ import annotations

import sys

from ..cni import dispatch
from ..ipam.plugin import IpamPlugin


def main() -> None:
    sys.exit(dispatch.main(IpamPlugin()))


if __name__ == "__main__":
    main()
