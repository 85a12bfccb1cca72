"""
The bench scripts run under the project's venv however they are started (`./bench/lab`, whose shebang finds the
system python, `python3 bench/lab`, `.venv/bin/python bench/lab`): outside it they re-execute themselves with
`.venv/bin/python`. Imported before anything that needs the venv's packages (salt, pymysql, yaml).
"""

import os
import pathlib
import sys

# set in the re-executed process: a venv whose python does not report it as its prefix must not loop
REEXECUTED = "ROLESTACK_BENCH_REEXECUTED"


def run_in_project_venv(repo):
    """Re-execute the running script with ``repo``/.venv/bin/python unless that venv is the one running."""
    venv = pathlib.Path(repo) / ".venv"
    if pathlib.Path(sys.prefix).resolve() == venv.resolve() or os.environ.get(REEXECUTED):
        return
    python = venv / "bin" / "python"
    if not python.exists():
        sys.exit(f"{python} is missing: run `make setup` in {repo} first")
    os.environ[REEXECUTED] = "1"
    os.execv(python, [str(python), os.path.abspath(sys.argv[0]), *sys.argv[1:]])
