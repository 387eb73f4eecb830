"""`python -m connguard`: the same entry point, and the same name in messages, as the console script."""

from connguard.cli import main

if __name__ == "__main__":
    main(prog_name="connguard")
