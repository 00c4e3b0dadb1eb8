"""seglib bench's measuring parts (the benchmark itself runs with `make bench`, not in the suite)."""
from seglib.local.bench import MemoryPeak


def test_memory_peak_sees_this_process_and_its_spark_jvm(spark):
    spark.range(10).count()  # the test session's JVM is a child of this process
    peak = MemoryPeak()
    peak.sample()
    assert peak.python > 50 * 2**20 and peak.jvm > 100 * 2**20


def test_cell_seconds_reads_where_a_notebook_spent_its_time(tmp_path):
    import nbformat
    import papermill as pm
    from seglib.local.bench import cell_seconds
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# not code"),
        nbformat.v4.new_code_cell("# why: a comment line is skipped\n\nimport time\ntime.sleep(0.6)"),
        nbformat.v4.new_code_cell("x = 1"),
    ])
    nbformat.write(nb, tmp_path / "in.ipynb")
    pm.execute_notebook(str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                        progress_bar=False)
    (first, slow), (second, fast) = cell_seconds(tmp_path / "out.ipynb")
    assert (first, second) == ("import time", "x = 1")
    assert slow >= 0.6 and fast < slow


def test_ratios_and_the_markdown_show_the_cluster_stage_against_the_references():
    from seglib.local.bench import markdown, ratios
    record = {"members": 1000, "setup_s": 1.0, "total_s": 30.0, "server_start_s": 5.0, "rows_per_s": 33,
              "peak_memory_mb": {"jvm": 900, "python": 400}, "next_run_s": 20.0,
              "stages_s": {"01_load": 10.0, "03_cluster": 8.0}, "next_run_stages_s": {"01_load": 6.0, "03_cluster": 5.0},
              "cells_s": {"03_cluster": [["result = segment(features, mode)", 3.0], ["x = 1", 0.05]]},
              "cluster_segment_cell_s": 3.0,
              "lab_plain": {"total_s": 16.0, "fit_s": 12.0}, "sklearn": {"total_s": 2.0, "fit_s": 1.9}}
    record["ratios"] = ratios(record)
    assert record["ratios"] == {"cluster_stage_vs_sklearn": 4.0, "cluster_stage_next_run_vs_sklearn": 2.5,
                                "cluster_segment_cell_vs_sklearn": 1.5, "cluster_stage_vs_lab_plain": 0.5,
                                "job_vs_lab_plain": 1.88}
    text = markdown(record)
    assert "| 03_cluster | 8.0 | 5.0 |" in text and "| `result = segment(features, mode)` | 3.0 |" in text
    assert "x = 1" not in text  # cells under 0.1 s are left out of the table


def test_the_scikit_learn_reference_counts_its_fastest_run(tmp_path):
    """On a Delta table written by delta-rs (no Spark): every run is kept, the fastest counts."""
    import numpy as np
    import pandas as pd
    from deltalake import write_deltalake
    from seglib.local.bench import sklearn_reference
    from seglib.features import FEATURES
    rng = np.random.default_rng(1)
    kpi = pd.DataFrame(rng.gamma(2.0, 10.0, size=(3000, len(FEATURES))), columns=FEATURES)
    kpi.loc[::100, FEATURES[0]] = np.nan  # na.drop, as the lab does: 30 rows go
    write_deltalake(str(tmp_path / "kpi"), kpi)
    result = sklearn_reference(str(tmp_path / "kpi"), n_init=1, repeats=3)
    assert result["rows"] == 2970 and len(result["runs_s"]) == 3
    assert result["total_s"] == min(result["runs_s"]) and 0 < result["fit_s"] <= result["total_s"]
