"""The shared local Spark server the runner starts for a run."""
import os

import pytest

from seglib.errors import LocalSparkError
from seglib.session import shared_local_spark


def test_server_refuses_a_lakehouse_whose_catalog_another_jvm_holds(spark, lakehouse, tmp_path):
    # The test session holds this lakehouse's Derby catalog (once it has touched it), as a concurrent run would.
    spark.sql("SHOW DATABASES").collect()
    before = os.environ.get("SPARK_REMOTE")
    with pytest.raises(LocalSparkError, match="another Spark process.*holds this lakehouse's catalog"):
        with shared_local_spark(lakehouse, tmp_path / "server.log", timeout=300):
            pass
    assert os.environ.get("SPARK_REMOTE") == before
    assert not (tmp_path / "server.ready").exists()
