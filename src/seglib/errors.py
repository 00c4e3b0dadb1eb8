"""Errors a user is meant to read: each names the table, the column and what was expected."""


class SeglibError(Exception):
    """Base class: a run stopped for a reason seglib understands."""


class InputContractError(SeglibError):
    """The input tables do not match what the pipeline needs."""


class ParameterError(SeglibError):
    """A parameter value is not acceptable."""


class ValidationError(SeglibError):
    """The outputs failed their checks; nothing was written."""


class LocalSparkError(SeglibError):
    """The shared local Spark server could not be started."""


class ConcurrentRunError(SeglibError):
    """Another run is writing the same outputs; this one stopped without publishing."""
