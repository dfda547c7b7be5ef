"""The scripts' command-line helper: one parser class and one way to end.

Every script parses with :class:`ScriptParser` and runs its work through :func:`run_script`, so
that every error ends the same way: one line on stderr and a documented exit status, never a
traceback.

| status | when |
| --- | --- |
| 0 | done |
| 1 | training diverged (a non-finite loss, gradient, parameter or evaluation) |
| 2 | bad options or input files, a file-system error, not enough memory |
| 130 | Ctrl-C (after saving a checkpoint where the script keeps one) |
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from mlp.train.trainer import TrainingDiverged, TrainingInterrupted


class ScriptParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit status 2, without
    argparse's usage block. ``only_given=True`` makes options default to absent
    (``argparse.SUPPRESS``): ``vars(args)`` then holds only what was given, and the library's
    defaults fill the rest."""

    def __init__(self, *args: Any, only_given: bool = False, **kwargs: Any) -> None:
        if only_given:
            kwargs["argument_default"] = argparse.SUPPRESS
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def fail(self, status: int, message: str) -> NoReturn:
        """End with ``message`` on one line and exit ``status``."""
        line = " ".join(str(message).split())
        self.exit(status, f"{self.prog}: {line}\n")


def check_resume_options(resume: Path, given: Mapping[str, Any], changeable: Sequence[str]) -> None:
    """``--resume RUN_DIR`` continues with the run folder's own options: any other option given
    (``given``: what was on the command line) than those in ``changeable`` is refused."""
    fixed = [f"--{k.replace('_', '-')}" for k in given if k not in changeable]
    if fixed:
        allowed = " or ".join(f"--{k}" for k in changeable)
        raise ValueError(
            f"--resume: the run continues with its own options from {resume}/config.json; only "
            f"{allowed} may be given, received {' '.join(fixed)}"
        )


def run_script(
    parser: ScriptParser,
    work: Callable[[], Any],
    *,
    diverged_hint: str = "",
    resume_flag: str = "--resume",
) -> Any:
    """``work()``, with every failure turned into one line and its exit status (see the table
    above). ``diverged_hint`` is appended to a divergence message (for example which option
    to lower); ``resume_flag`` names how to continue an interrupted run."""
    try:
        return work()
    except TrainingDiverged as err:
        parser.fail(1, f"{err}{diverged_hint}")
    except TrainingInterrupted as err:
        hint = f"; continue with {resume_flag} {err.checkpoint.parent}" if err.checkpoint else ""
        parser.fail(130, f"{err}{hint}")
    except KeyboardInterrupt:
        parser.fail(130, "interrupted")
    except MemoryError as err:
        parser.fail(2, f"error: {err or 'not enough memory'}")
    except (ValueError, TypeError) as err:
        parser.fail(2, f"error: {err}")
    except OSError as err:
        where = f" {err.filename}" if err.filename else ""
        parser.fail(2, f"error:{where}: {err.strerror or err}")
