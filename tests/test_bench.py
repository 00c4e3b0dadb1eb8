"""seglib bench's measuring parts (the benchmark itself runs with `make bench`, not in the suite)."""
from seglib.bench import MemoryPeak


def test_memory_peak_sees_this_process_and_its_spark_jvm(spark):
    spark.range(10).count()  # the test session's JVM is a child of this process
    peak = MemoryPeak()
    peak.sample()
    assert peak.python > 50 * 2**20 and peak.jvm > 100 * 2**20


def test_cell_seconds_reads_where_a_notebook_spent_its_time(tmp_path):
    import nbformat
    import papermill as pm
    from seglib.bench import cell_seconds
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
