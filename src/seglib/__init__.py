"""seglib: customer segmentation for lakehouses (Databricks, Fabric, local Spark + Delta)."""
from .session import get_spark

__version__ = "0.1.0"
__all__ = ["get_spark", "__version__"]
