"""`python -m connguard`: the same entry point as the console script."""

from connguard.cli import main

if __name__ == "__main__":
    main()
