"""Search spaces: architecture dataclasses with a readable string form and a `build()` to a child net."""
from .mbconv import MBConvArch

SPACES = {"mbconv": MBConvArch}


def register_space(cls):
    SPACES[cls.space] = cls
    return cls


def parse_arch(space: str, s: str):
    """Architecture object of `space` from its string form."""
    from ..errors import check_choice

    if space not in SPACES:
        try:  # spaces other than mbconv register themselves on import
            from . import cells  # noqa: F401
        except ImportError:
            pass
    check_choice("search space", space, SPACES)
    return SPACES[space].parse(s)
