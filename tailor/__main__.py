"""`python -m tailor check RECIPE [key=value ...]`: validate a recipe and its inputs without running anything;
`python -m tailor doctor [RECIPE]`: the machine and the choices tailor makes on it."""

from tailor.cli import main

if __name__ == "__main__":
    main()
