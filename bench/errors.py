"""The suite's own error types: every user-facing failure is one of these, with a message
that says what was wrong, where, and what was expected."""


class BenchError(Exception):
    """Base class of every error the suite raises on purpose."""


class ConfigError(BenchError):
    """A config key or value that cannot be used (unknown key, bad type, impossible combination)."""


class UnknownNameError(BenchError, KeyError):
    """A registry lookup for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataFormatError(BenchError):
    """A malformed input file: the message names the file, the line and what was expected."""

    def __init__(self, path, line: int | None, message: str):
        self.path, self.line = str(path), line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class RunningElsewhere(BenchError):
    """Another process is running this configuration now (``bench.checkpoint.RunLock``)."""

    exit_code = 75  # EX_TEMPFAIL: a sweep child that exits so was not run and did not fail
