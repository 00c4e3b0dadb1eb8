"""The RFM pipeline's settings and the local run's set-up (seglib.pipeline, seglib.local.pipeline): no JVM."""
from datetime import date

import pytest
import yaml

from seglib import comments as C
from seglib import pipeline as P
from seglib import tables as TB
from seglib.bundle import find_root
from seglib.cli import main
from seglib.errors import ParameterError
from seglib.local import pipeline as LP

ROOT = find_root()


def test_settings_defaults_and_conf_round_trip():
    assert P.Settings() == P.Settings.from_conf({})
    s = P.Settings(source_table="sales.lines", rfm_bins="5", as_of="2011-12-10")
    assert (s.source_table, s.rfm_bins, s.as_of) == ("sales.lines", 5, date(2011, 12, 10))
    assert s.conf() == {P.SOURCE_TABLE: "sales.lines", P.RFM_BINS: "5", P.AS_OF: "2011-12-10"}
    assert P.Settings.from_conf(s.conf()) == s
    assert P.Settings.from_conf({P.AS_OF: "", P.RFM_BINS: ""}) == P.Settings()


@pytest.mark.parametrize("conf,name", [({P.RFM_BINS: "3"}, P.RFM_BINS), ({P.AS_OF: "10/12/2011"}, P.AS_OF),
                                       ({P.SOURCE_TABLE: "a.b.c.d"}, P.SOURCE_TABLE),
                                       ({P.SOURCE_TABLE: "lines; DROP"}, P.SOURCE_TABLE)])
def test_bad_settings_name_the_configuration_key(conf, name):
    with pytest.raises(ParameterError, match=name.replace(".", r"\.")):
        P.Settings.from_conf(conf)


def test_every_dataset_and_column_is_described():
    for table in TB.PIPELINE_TABLES:
        assert C.TABLES[table].strip()
        assert all(text.strip() for text in C.PIPELINE_COLUMNS[table].values())
    assert list(C.PIPELINE_COLUMNS[TB.GOLD_RFM_SEGMENTS]) == TB.RETAIL_RFM_COLUMNS
    assert list(C.PIPELINE_COLUMNS[TB.GOLD_RFM_SUMMARY]) == TB.RFM_PIPELINE_SUMMARY_COLUMNS
    assert list(C.PIPELINE_COLUMNS[TB.RFM_QUALITY_CHECKS]) == list(P.QUALITY_COLUMNS)
    # The same words as the retail recipe's gold table for the same columns
    assert C.PIPELINE_COLUMNS[TB.GOLD_RFM_SEGMENTS] == C.RFM_COLUMNS


def test_prepare_writes_the_spec_the_sources_and_the_spark_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(LP, "_delta_jars", lambda lakehouse, log: ["/jars/delta-spark.jar", "/jars/delta-storage.jar"])
    settings = P.Settings(rfm_bins=5, as_of="2024-01-31")
    spec_path = LP.prepare(ROOT, tmp_path, "shop", settings)
    spec = yaml.safe_load(spec_path.read_text())
    assert spec["database"] == "shop"
    assert spec["configuration"] == {"spark.sql.sources.default": "delta", **settings.conf()}
    assert spec["libraries"] == [{"glob": {"include": "transformations/**"}}]
    assert spec["storage"].startswith("file:") and str(tmp_path) in spec["storage"]
    copied = spec_path.parent / "transformations" / "rfm_segments.py"
    assert copied.read_text() == (ROOT / LP.SOURCES / "rfm_segments.py").read_text()
    conf = dict(line.split(" ", 1) for line in (tmp_path / ".seglib-pipelines" / "rfm" / "conf" / "spark-defaults.conf")
                .read_text().splitlines())
    # What spark-pipelines would otherwise drop: Delta's catalog, and the lakehouse's own Hive catalog.
    assert conf["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    assert conf["spark.driver.extraClassPath"] == "/jars/delta-spark.jar:/jars/delta-storage.jar"
    assert str(tmp_path) in conf["spark.hadoop.javax.jdo.option.ConnectionURL"]
    assert f"-Dderby.system.home={tmp_path}" in conf["spark.driver.extraJavaOptions"]
    # A second prepare replaces the copy (an edited source is what runs next).
    (spec_path.parent / "transformations" / "stale.py").write_text("raise SystemExit")
    LP.prepare(ROOT, tmp_path, "shop", settings)
    assert not (spec_path.parent / "transformations" / "stale.py").exists()


def test_a_missing_source_table_stops_before_spark_starts(tmp_path, capsys):
    assert main(["pipeline", "run", "--lakehouse", str(tmp_path), "--schema", "shop"]) == 1
    err = capsys.readouterr().err
    assert "input table shop.retail_transactions was not found" in err and "seglib generate --recipe retail" in err
    assert main(["pipeline", "run", "--lakehouse", str(tmp_path), "--schema", "shop",
                 "--source-table", "raw.lines"]) == 1
    assert "input table raw.lines was not found" in capsys.readouterr().err
    assert main(["pipeline", "run", "--lakehouse", str(tmp_path), "--schema", "shop", "--rfm-bins", "6"]) == 1
    assert "seglib.rfm_bins must be 4 or 5" in capsys.readouterr().err
    assert not (tmp_path / "metastore_db").exists()  # no Spark was started
