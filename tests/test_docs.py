"""Run the executable documentation in ``docs/tensors.md`` as doctests."""

import doctest
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "tensors.md"


def test_tensors_md_doctests() -> None:
    assert DOC.is_file(), f"missing {DOC}"
    result = doctest.testfile(
        str(DOC),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    assert result.failed == 0, f"{result.failed} doctest example(s) failed"
    assert result.attempted >= 20, f"only {result.attempted} examples ran"
