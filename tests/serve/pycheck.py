"""What the Python test scripts share: repository paths and counted checks."""
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "models", "evla-tiny-random")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "single_mha_nocfg")
passed = 0


def check(cond, what):
    global passed
    passed += 1
    if not cond:
        raise AssertionError(what)


def raises(exc, fn, part):
    try:
        fn()
    except exc as e:
        check(part in str(e), f"{exc.__name__} message {str(e)!r} lacks {part!r}")
        return
    raise AssertionError(f"expected {exc.__name__} containing {part!r}")


def image(h, w, salt=0):
    """A deterministic uint8 [h, w, 3] test image."""
    return ((np.arange(h * w * 3, dtype=np.int64) * 7 + salt * 31) % 251).astype(np.uint8).reshape(h, w, 3)
