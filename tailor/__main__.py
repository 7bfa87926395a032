"""`python -m tailor check RECIPE [key=value ...]`: validate a recipe and its inputs without running anything."""

from tailor.cli import main

if __name__ == "__main__":
    main()
