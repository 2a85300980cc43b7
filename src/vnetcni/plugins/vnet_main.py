"""Entry point of the `vnet` console script (the same front door `vnetctl install` writes)."""


def main() -> None:
    from .front import main as run_once

    run_once("vnet")


if __name__ == "__main__":
    main()
