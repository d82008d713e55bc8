"""`python -m pistop_mdns` runs the same command line as `pistop-mdns`."""

from pistop_mdns.cli import main

if __name__ == "__main__":
    main(prog_name="pistop-mdns")
