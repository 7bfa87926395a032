"""`python -m tailor COMMAND ...`, the same as the `tailor` console command: `check RECIPE [key=value ...]`
validates a recipe and its inputs without running anything, `doctor [RECIPE]` shows the machine and the choices
tailor makes on it; `data`, `audit`, `train`, `plan`, `merge`, `slurm`, `eval` and `compare` run the stages
(`tailor --help`)."""

from tailor.cli import main

if __name__ == "__main__":
    main()
