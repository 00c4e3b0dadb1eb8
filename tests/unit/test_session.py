"""How notebooks get Spark and cache on every platform (seglib.session)."""
import pytest

from conftest import SERVERLESS_NO_CACHE
from seglib import session as S


class _Frame:
    """Stands in for a DataFrame whose cache() fails with *error*."""
    def __init__(self, error=None):
        self.error, self.unpersisted = error, False

    def cache(self):
        if self.error:
            raise self.error
        return self

    def unpersist(self):
        if self.error:
            raise self.error
        self.unpersisted = True


def test_cache_falls_back_only_where_the_compute_has_no_cache():
    serverless = RuntimeError(SERVERLESS_NO_CACHE)
    frame = _Frame(serverless)
    assert S.cache(frame) is frame
    S.uncache(frame)  # nothing was cached; nothing to free, no error
    S.uncache(None)
    with pytest.raises(RuntimeError, match="boom"):  # any other failure is a failure
        S.cache(_Frame(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        S.uncache(_Frame(RuntimeError("boom")))
    fine = _Frame()
    assert S.cache(fine) is fine
    S.uncache(fine)
    assert fine.unpersisted
