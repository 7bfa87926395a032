"""Run many real CLI invocations in one Python process (imports paid once): `python batch_cli.py jobs.json out.json`.

Each job is {"argv": ["data_prep", "recipe.yaml", ...]}: the module's `main` runs with that command line, exactly
as `python -m data_prep recipe.yaml ...` would, its stdout/stderr captured. An exception escaping `main` is what a
user would see as a traceback: it is recorded as such."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import sys
import traceback

MAINS = {"tailor": "tailor.cli", "data_prep": "data_prep.__main__", "train": "train.__main__",
         "eval": "eval.__main__"}


def run_job(argv: list[str]) -> dict:
    module = importlib.import_module(MAINS[argv[0]])
    out, err = io.StringIO(), io.StringIO()
    code = 0
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    sys.argv = [f"python -m {argv[0]}", *argv[1:]]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if argv[0] == "tailor":
                module.main(argv[1:])
            else:
                module.main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:  # noqa: BLE001 - escaping the CLI means the user sees this traceback
            err.write(traceback.format_exc())
            code = 1
    return {"argv": argv, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main() -> None:
    jobs_file, out_file = sys.argv[1], sys.argv[2]  # each job replaces sys.argv
    with open(jobs_file, encoding="utf-8") as handle:
        jobs = json.load(handle)
    results = [run_job(job["argv"]) for job in jobs]
    with open(out_file, "w", encoding="utf-8") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main()
