"""Tables at paths (OneLake cross-workspace mode) and service-principal OAuth from a secret store."""
import pytest
from deltalake import DeltaTable

from seglib import onelake
from seglib import tables as TB
from seglib.errors import InputContractError, ParameterError
from seglib.features import build_features
from seglib.load import load_gold, read_input
from seglib.params import notebook_params

SECRET = "s3cr3t-Value-that-must-not-leak"
HOST = "onelake.dfs.fabric.microsoft.com"
ONELAKE = f"abfss://ws@{HOST}/lh.Lakehouse/Tables"


@pytest.fixture
def oauth_confs_unset(spark):
    yield
    for name in onelake.oauth_confs(HOST, "t", "c", "s"):
        spark.conf.unset(name)


@pytest.fixture(scope="module")
def source_path(spark, demo, tmp_path_factory):
    """The demo Gold layer as path-based Delta tables, one folder per table."""
    root = tmp_path_factory.mktemp("source")
    for table in TB.GOLD_INPUTS:
        spark.read.table(demo.qualified(table)).write.format("delta").save(str(root / table))
    return str(root)


def test_path_mode_reads_inputs_and_writes_intermediates_at_paths(spark, source_path, tmp_path):
    target = tmp_path / "target"
    where, summary = onelake.setup_storage(spark, {"schema": "no_such_schema", "source_path": source_path,
                                                   "target_path": str(target) + "/"})
    assert summary == f"inputs: {source_path}; outputs: {target}"
    assert where == TB.Location("no_such_schema", None, source_path, str(target))
    gold, _ = load_gold(spark, where)  # the schema is not used for tables at paths
    assert gold[TB.KPI_CUSTOMER_VALUE].count() == 3000

    features, _ = build_features(gold[TB.KPI_CUSTOMER_VALUE], "impute")
    assert TB.save_table(features, TB.SEG_FEATURES, where) == f"{target}/{TB.SEG_FEATURES}"

    written = DeltaTable(str(target / TB.SEG_FEATURES))
    rows = written.to_pyarrow_table()
    assert rows.num_rows == 3000 and set(rows.column_names) == set(features.columns)
    assert TB.read_table(spark, TB.SEG_FEATURES, where).count() == 3000
    assert not (target / TB.KPI_CUSTOMER_VALUE).exists()  # inputs are only read from source_path
    assert not spark.catalog.tableExists(f"no_such_schema.{TB.SEG_FEATURES}")


def test_only_one_side_at_a_path(spark, demo, tmp_path):
    where = TB.Location(demo.schema, target_path=str(tmp_path))
    kpi = read_input(spark, TB.KPI_CUSTOMER_VALUE, where)  # inputs still from the catalog
    assert kpi.count() == 3000
    assert where.path(TB.GOLD_SUMMARY) == f"{tmp_path}/{TB.GOLD_SUMMARY}"
    assert where.path(TB.KPI_CUSTOMER_VALUE) is None and where.sql(TB.KPI_CUSTOMER_VALUE) == "`demo`.`kpi_customer_value`"
    assert where.sql(TB.GOLD_SUMMARY) == f"delta.`{tmp_path}/{TB.GOLD_SUMMARY}`"
    # Two Locations in one process do not meet: what one says does not change the other (no module state).
    assert TB.Location(demo.schema).path(TB.GOLD_SUMMARY) is None


def test_missing_table_at_a_path_names_the_path_and_columns(spark, tmp_path):
    with pytest.raises(InputContractError) as e:
        read_input(spark, TB.KPI_CUSTOMER_VALUE, TB.Location("demo", source_path=str(tmp_path)))
    message = str(e.value)
    assert f"{tmp_path}/{TB.KPI_CUSTOMER_VALUE} does not exist" in message
    assert "customer_key int" in message and "total_spent double" in message


def test_path_and_key_parameters_are_checked():
    ok = {"source_path": ONELAKE, "target_path": "/Volumes/main/s/v/t", "secret_scope": "https://kv.vault.azure.net/",
          "tenant_id_key": "sp-tenant", "client_id_key": "sp.client_id", "client_secret_key": ""}
    assert notebook_params(dict(ok)) == ok
    assert notebook_params({"target_path": "out/tables"}) == {"target_path": "out/tables"}
    for name, value in [("source_path", "s3://bucket/x"), ("target_path", "/tmp/a b"), ("source_path", "x`; DROP"),
                        ("target_path", "abfss://no-host"), ("client_id_key", "a/b"), ("tenant_id_key", "a b")]:
        with pytest.raises(ParameterError, match=name):
            notebook_params({name: value})


def test_secret_from_environment(monkeypatch):
    monkeypatch.setenv("SEGLIB_SECRET_MY_SCOPE_SP_CLIENT_ID", "abc")
    assert onelake.get_secret("my-scope", "sp.client-id", namespace={}) == "abc"


def test_secret_from_databricks_dbutils():
    class Secrets:
        def get(self, scope, key):
            if (scope, key) == ("kv", "id"):
                return "from-dbutils"
            raise RuntimeError(f"Secret does not exist with scope: {scope} and key: {key}")

    namespace = {"dbutils": type("DbUtils", (), {"secrets": Secrets()})()}
    assert onelake.get_secret("kv", "id", namespace) == "from-dbutils"
    with pytest.raises(ParameterError, match="secret 'other' of scope 'kv' could not be read"):
        onelake.get_secret("kv", "other", namespace)


def test_missing_secret_names_scope_and_key(monkeypatch):
    monkeypatch.delenv("SEGLIB_SECRET_KV_NOPE", raising=False)
    with pytest.raises(ParameterError, match="secret 'nope' of secret scope 'kv' not found.*SEGLIB_SECRET_KV_NOPE"):
        onelake.get_secret("kv", "nope", namespace={})


def test_configure_oauth_sets_the_abfs_confs(spark, oauth_confs_unset):
    onelake.configure_oauth(spark, "tenant-1", "client-1", SECRET)
    get = spark.conf.get
    assert get(f"fs.azure.account.auth.type.{HOST}") == "OAuth"
    assert get(f"fs.azure.account.oauth.provider.type.{HOST}") == \
        "org.apache.hadoop.fs.azurebfs.oauth2.ClientCredsTokenProvider"
    assert get(f"fs.azure.account.oauth2.client.id.{HOST}") == "client-1"
    assert get(f"fs.azure.account.oauth2.client.secret.{HOST}") == SECRET
    assert get(f"fs.azure.account.oauth2.client.endpoint.{HOST}") == \
        "https://login.microsoftonline.com/tenant-1/oauth2/token"


def test_setup_storage_configures_oauth_only_for_abfss_with_all_keys(spark, monkeypatch, oauth_confs_unset):
    keys = {"secret_scope": "kv", "tenant_id_key": "t", "client_id_key": "c", "client_secret_key": "s"}
    for key, value in {"T": "tenant-2", "C": "client-2", "S": SECRET}.items():
        monkeypatch.setenv(f"SEGLIB_SECRET_KV_{key}", value)
    onelake.setup_storage(spark, {"schema": "s", "target_path": "/tmp/local", **keys})  # not abfss: nothing to do
    assert spark.conf.get(f"fs.azure.account.auth.type.{HOST}", None) is None
    _, summary = onelake.setup_storage(spark, {"schema": "s", "source_path": ONELAKE, **keys})
    assert summary.endswith(f"OAuth service principal for {HOST}") and SECRET not in summary
    assert spark.conf.get(f"fs.azure.account.oauth2.client.id.{HOST}") == "client-2"
    with pytest.raises(ParameterError, match="missing: client_secret_key"):
        onelake.setup_storage(spark, {"schema": "s", "source_path": ONELAKE, **keys, "client_secret_key": ""})


def test_secret_values_are_never_printed_or_in_errors(spark, monkeypatch, capfd, oauth_confs_unset):
    monkeypatch.setenv("SEGLIB_SECRET_KV_S", SECRET)
    monkeypatch.setenv("SEGLIB_SECRET_KV_T", "tenant-3")
    monkeypatch.setenv("SEGLIB_SECRET_KV_C", "client-3")
    params = {"schema": "s", "source_path": ONELAKE, "target_path": ONELAKE, "secret_scope": "kv",
              "tenant_id_key": "T", "client_id_key": "C", "client_secret_key": "S"}
    print(onelake.setup_storage(spark, params))
    onelake.configure_oauth(spark, "tenant-3", "client-3", SECRET)

    class Refusing:  # compute that refuses the conf, with an error quoting the value
        class conf:
            @staticmethod
            def set(name, value):
                raise ValueError(f"cannot set {name}={value}")

    with pytest.raises(ParameterError) as e:
        onelake.setup_storage(Refusing, params)
    out, err = capfd.readouterr()
    assert "fs.azure.account.auth.type" in str(e.value)
    for text in (out, err, str(e.value), repr(e.value)):
        assert SECRET not in text
