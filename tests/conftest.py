"""One local Spark session (Delta + Hive catalog in a temporary lakehouse) for the whole test run."""
import itertools

import pytest

_schemas = itertools.count()


@pytest.fixture(scope="session")
def lakehouse(tmp_path_factory):
    return tmp_path_factory.mktemp("lakehouse")


@pytest.fixture(scope="session")
def spark(lakehouse):
    from seglib.session import local_session
    session = local_session(lakehouse, app_name="seglib-tests")
    yield session
    session.stop()


@pytest.fixture
def schema(spark):
    """A fresh, empty schema per test."""
    name = f"t{next(_schemas)}"
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {name}")
    return name


@pytest.fixture(scope="session")
def demo(spark):
    """A small demo Gold layer generated once, in schema `demo`."""
    from seglib.generate import generate_demo_data
    generate_demo_data(spark, "demo", customers=3000, seed=7, log=lambda *a: None)
    return "demo"
