"""Entry point of the `vnet` console script (the same front door `vnetctl install` writes)."""

import sys


def main() -> None:
    from .front import run

    sys.exit(run("vnet"))


if __name__ == "__main__":
    main()
