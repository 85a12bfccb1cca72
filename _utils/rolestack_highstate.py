"""
What a highstate returned, summarised once, and the one way to wait for something: used by the db runner
(``_runners/db.py``, its highstate after a switchover or a failover), the lab (``lab/rolestack_lab.py``, its
per-host table) and the tests.

A state succeeded when its ``result`` is True. Anything else failed: False, and in a real run also None (salt's
"would change" under ``test=True``: a real run that leaves a state undone is not clean) or a return that is not a
state's at all. Under ``test=True``, None is a change to come. Every state is either ok, changed or failed.

Pure: no Salt import, no loader. Unit tests in tests/unit/test_rolestack_highstate.py.
"""

import time

# what a minion that sent nothing back is summarised as
NO_ANSWER = "did not answer"


def summarize(ret, full_return=False, test=False):
    """
    One minion's return of ``state.highstate`` (or ``state.apply``): ``{state key: state return}``, or with
    ``full_return`` LocalClient's ``{"ret": ..., "retcode": ..., "out": ...}`` around it.

    Returns ``{"states", "ok", "changed", "failed", "seconds"}``: the number of states, the number that succeeded
    without changes, ``[(state id, changes)]``, ``[(state id, comment)]`` (in the return's order) and the sum of
    their durations in seconds. A return that holds no states (no answer, a render or pillar error: salt returns
    a list of messages) is ``{"error": text}``.
    """
    if full_return:
        if not isinstance(ret, dict) or "ret" not in ret or ret.get("out") == "no_return":
            return {"error": NO_ANSWER}
        ret = ret["ret"]
    if ret is None:
        return {"error": NO_ANSWER}
    if not isinstance(ret, dict):
        return {"error": "; ".join(str(line) for line in ret) if isinstance(ret, list) else str(ret)}
    changed, failed, milliseconds = [], [], 0.0
    for key, state in ret.items():
        if not isinstance(state, dict):
            failed.append((key, str(state)))
            continue
        sid = state.get("__id__", key)
        result = state.get("result", False)
        if result is True:
            if state.get("changes"):
                changed.append((sid, state["changes"]))
        elif result is None and test:
            changed.append((sid, state.get("changes") or {}))
        else:
            failed.append((sid, str(state.get("comment"))))
        milliseconds += _milliseconds(state.get("duration"))
    return {
        "states": len(ret),
        "ok": len(ret) - len(changed) - len(failed),
        "changed": changed,
        "failed": failed,
        "seconds": round(milliseconds / 1000, 2),
    }


def summarize_all(returns, minions, full_return=False, test=False):
    """:func:`summarize` for each of ``minions`` (in that order); one missing from ``returns`` did not answer."""
    return {minion: summarize(returns.get(minion), full_return=full_return, test=test) for minion in minions}


def _milliseconds(duration):
    # salt reports a state's duration in milliseconds (a float; a string in some versions' outputs)
    try:
        return float(duration or 0)
    except (TypeError, ValueError):
        return 0.0


def poll(predicate, timeout, interval=0.5):
    """
    True as soon as ``predicate()`` is true, asking every ``interval`` seconds; False once ``timeout`` seconds
    passed without (it is asked at least once, and once more at the end).
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(interval, left))


def wait_for(predicate, timeout, what, interval=0.5, error=TimeoutError):
    """
    :func:`poll`, raising ``error`` ("timed out after <timeout> s waiting for <what>") when the time ran out.
    ``what`` may be a callable: it is called then, to name what was last seen.
    """
    if not poll(predicate, timeout, interval):
        raise error(f"timed out after {timeout} s waiting for {what() if callable(what) else what}")
