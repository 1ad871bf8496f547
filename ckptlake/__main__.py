"""`python -m ckptlake ...`: the same command line as the `ckptlake` console script."""
from ckptlake.cli.main import main

if __name__ == "__main__":
    main()
