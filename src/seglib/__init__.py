"""seglib: customer segmentation for lakehouses (Databricks, Fabric, local Spark + Delta)."""
__version__ = "0.1.0"
__all__ = ["setup", "get_spark", "notebook_params", "__version__"]


def __getattr__(name):
    # Lazy, so `import seglib` (e.g. to check an installed wheel) does not need pyspark.
    if name == "setup":
        from .notebook import setup
        return setup
    if name == "get_spark":
        from .session import get_spark
        return get_spark
    if name == "notebook_params":
        from .params import notebook_params
        return notebook_params
    if name == "session":
        from . import session
        return session
    raise AttributeError(f"module 'seglib' has no attribute {name!r}")
