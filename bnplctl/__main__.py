"""``python -m bnplctl``."""

from bnplctl.cli.app import main

if __name__ == "__main__":
    main()
