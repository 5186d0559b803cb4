"""`python -m autoloss` — the same as the `autoloss` console script."""

from autoloss.cli import main

if __name__ == "__main__":
    main()
