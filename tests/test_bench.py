"""seglib bench's measuring parts (the benchmark itself runs with `make bench`, not in the suite)."""
from seglib.bench import MemoryPeak


def test_memory_peak_sees_this_process_and_its_spark_jvm(spark):
    spark.range(10).count()  # the test session's JVM is a child of this process
    peak = MemoryPeak()
    peak.sample()
    assert peak.python > 50 * 2**20 and peak.jvm > 100 * 2**20
