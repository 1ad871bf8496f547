"""`python -m ckptlake ...`: the same command line as the `ckptlake` console script."""
from ckptlake.cli.main import console

if __name__ == "__main__":
    console()
