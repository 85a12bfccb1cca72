"""
rolestack as an installed package: Salt finds its loader directories through the ``salt.loader``
entry points declared in setup.cfg, so ``pip install rolestack`` needs no ``saltutil.sync_all``.
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def _dirs(name):
    # installed: rolestack/_modules; in a source checkout: the repo's _modules beside this package
    for candidate in (os.path.join(_HERE, name), os.path.join(os.path.dirname(_HERE), name)):
        if os.path.isdir(candidate):
            return [candidate]
    return []


def module_dirs():
    return _dirs("_modules")


def states_dirs():
    return _dirs("_states")


def pillar_dirs():
    return _dirs("_pillar")


def runner_dirs():
    return _dirs("_runners")


def utils_dirs():
    return _dirs("_utils")
