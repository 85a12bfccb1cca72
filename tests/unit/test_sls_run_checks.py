"""
No highstate SLS has an unless/onlyif/creates check that a no-op run evaluates: salt 3008 answers the first such
check of a run by loading every state module (it looks for a ``mod_run_check``), about 0.75 s of each no-op
highstate (bench/lab, lab_noop_overhead_*). The checks are made while rendering, or by a state of our own
(rolestack_x509, rolestack_kv.firewall_loaded). Allowed: a check reached only after a change (behind onchanges),
and the bootstrap's SLS, which no highstate runs.
"""

import re

from tests.support.paths import STATES

RUN_CHECK = re.compile(r"^\s*-\s*(unless|onlyif|creates)\s*:", re.MULTILINE)
# (sls, check): reached only when its onchanges fired, never in a no-op run
AFTER_A_CHANGE = {("db/certs.sls", "onlyif")}


def test_no_run_check_in_a_no_op_highstate():
    found = set()
    for sls in STATES.rglob("*.sls"):
        rel = sls.relative_to(STATES).as_posix()
        if rel.startswith("bootstrap/"):
            continue
        found |= {(rel, match.group(1)) for match in RUN_CHECK.finditer(sls.read_text())}
    assert found - AFTER_A_CHANGE == set()
    for rel, check in AFTER_A_CHANGE:
        assert (rel, check) in found, "the allowance is stale"


def test_the_allowed_check_is_behind_onchanges():
    text = (STATES / "db/certs.sls").read_text()
    block = text[text.index("db-certs-reload-mariadb:") :].split("\n\n")[0]
    assert "- onlyif:" in block and "- onchanges:" in block
