"""The scripts' command-line helper: one parser class and one way to end.

Every script parses with :class:`ScriptParser` and runs all its work (the imports of the heavy
modules included) through :func:`run_script`, so that every error ends the same way: one line
on stderr and a documented exit status, never a traceback.

Exit statuses (``metrics.json``'s ``stop_reason`` in brackets):

- 0: done, the run folder complete (``"completed"``).
- 1: training diverged: a non-finite loss, gradient, parameter or evaluation; the last good
  checkpoint is kept (``"diverged"``).
- 2: bad options or input files; a run folder that already holds a run; a file-system error
  (not a folder, no permission, disk full, a read-only run folder: checked before training);
  not enough memory.
- 3: training stopped early at a stationary point (a zero gradient); the run folder is complete
  (``"stopped_early"``, and where).
- 130: Ctrl-C, at any point, after saving a checkpoint where the script keeps one
  (``"interrupted"``; resuming finishes the run).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from mlp.train.errors import TrainingDiverged, TrainingInterrupted


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
    memory_hint: str = "",
    resume_flag: str = "--resume",
) -> Any:
    """``work()``, with every failure turned into one line and its exit status (see the table
    above). ``diverged_hint`` is appended to a divergence message and ``memory_hint`` to a
    ``MemoryError`` (for example which options to lower); ``resume_flag`` names how to continue
    an interrupted run."""
    try:
        return work()
    except TrainingDiverged as err:
        parser.fail(1, f"{err}{diverged_hint}")
    except TrainingInterrupted as err:
        hint = f"; continue with {resume_flag} {err.checkpoint.parent}" if err.checkpoint else ""
        parser.fail(130, f"{err}{hint}")
    except KeyboardInterrupt as err:  # its message, if it has one, says what was kept
        parser.fail(130, str(err) or "interrupted")
    except ImportError as err:
        if not _interrupted(err):
            raise
        # a Ctrl-C inside a C extension's import (numpy's) surfaces as its ImportError
        parser.fail(130, "interrupted")
    except MemoryError as err:
        parser.fail(2, f"error: {err or 'not enough memory'}{memory_hint}")
    except (ValueError, TypeError, FloatingPointError) as err:
        parser.fail(2, f"error: {err}")
    except OSError as err:
        where = f" {err.filename}:" if err.filename else ""
        parser.fail(2, f"error:{where} {err.strerror or err}")


def _interrupted(err: BaseException) -> bool:
    """Whether a ``KeyboardInterrupt`` is among the causes or contexts of ``err``."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return False


def run_or_resume(
    experiment: ModuleType,
    given: dict[str, Any],
    total: str,
) -> dict[str, Any]:
    """What a training script does with its options ``given`` (those on the command line):
    ``--resume RUN_DIR`` continues that run with its own options (only ``total``, the new
    total of steps or epochs, may be given: :func:`check_resume_options`) and finishes it;
    otherwise a new run of ``experiment`` (a module with ``CHANGEABLE_ON_RESUME``,
    ``resume_experiment``, ``finish`` and ``run_experiment``) into ``--out`` or a default
    folder. Returns the run's metrics and ``run_dir``."""
    resume = given.pop("resume", None)
    if resume is not None:
        check_resume_options(resume, given, experiment.CHANGEABLE_ON_RESUME)
        resumed = experiment.resume_experiment(resume, given.get(total))
        t = resumed.trainer
        print(f"resuming {resume} at step {t.step} of {t.steps}")
        return experiment.finish(resumed, resume)
    return experiment.run_experiment(given, given.pop("out", None))


def folder(text: str) -> Path:
    """An argparse ``type``: a non-empty path (an empty one would be the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, received an empty path")
    return Path(text)


def exit_status(parser: ScriptParser, metrics: Mapping[str, Any]) -> int:
    """The exit status of a finished run (see the table above) from its ``metrics.json``: 0
    when completed; else its ``stop_reason`` and ``message`` in one line on stderr, and 3 for a
    run that stopped early (2 for an incomplete run folder)."""
    reason = metrics.get("stop_reason", "completed")
    if reason == "completed":
        return 0
    line = " ".join(f"{reason}: {metrics.get('message', '')}".split())
    print(f"{parser.prog}: {line}", file=sys.stderr)
    return 3 if reason == "stopped_early" else 2
