"""Entry point of the `vnet-ipam` console script (the same front door `vnetctl install` writes):
vnetd when it serves this node, else the IPAM handlers in-process (vnetcni.ipam.plugin)."""


def main() -> None:
    from .front import main as run_once

    run_once("vnet-ipam")


if __name__ == "__main__":
    main()
