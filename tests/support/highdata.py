"""Reading the high data `state.show_sls` returns (the functional tier's SLS tests)."""


def state_arg(high, state_id, key):
    """The value of argument ``key`` of the state ``state_id`` (its one module function), e.g. ``contents``."""
    return next(arg[key] for arg in next(iter(high[state_id].values())) if isinstance(arg, dict) and key in arg)
