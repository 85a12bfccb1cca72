"""The lab's reading of bootstrap/master.sh's output (lab/rolestack_lab.py): salt-call's JSON returns, one per run."""

import json
import subprocess
import sys

from tests.support.paths import REPO

sys.path.insert(0, str(REPO / "lab"))
import rolestack_lab

LOCAL = {"file_|-a_|-/etc/a_|-managed": {"result": True, "changes": {}, "comment": "ok"}}
ROLE = {"service_|-b_|-b_|-running": {"result": False, "changes": {}, "comment": "b is dead"}}


def proc(stdout):
    return subprocess.CompletedProcess(["master.sh"], 0, stdout=stdout, stderr="")


def test_two_runs_between_other_output_are_read_in_order():
    out = f"noise {{not json\n{json.dumps({'local': LOCAL}, indent=4)}\n[warning] x\n{json.dumps({'local': ROLE})}\n"
    assert rolestack_lab.bootstrap_returns(proc(out)) == {"bootstrap": LOCAL, "salt": ROLE}


def test_a_run_that_printed_no_json_is_missing():
    """master.sh stopped after its first run (--no-start, or a failure): only the bootstrap's returns."""
    assert rolestack_lab.bootstrap_returns(proc(json.dumps({"local": LOCAL}))) == {"bootstrap": LOCAL}
    assert rolestack_lab.bootstrap_returns(proc("master.sh: run it as root\n")) == {}


def test_json_documents_skips_what_is_not_json():
    assert rolestack_lab.json_documents('[1] {"a": {"b": [2]}} {oops ["x"]') == [[1], {"a": {"b": [2]}}, ["x"]]
