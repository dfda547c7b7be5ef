"""The tutorial notebook ``docs/tutorial.ipynb``: kept without outputs, and run top to bottom.

The run starts a fresh kernel with this interpreter (``sys.executable -m ipykernel_launcher``,
not whatever a ``python3`` kernelspec on the machine points to) and this checkout first on
``PYTHONPATH``, in an empty working folder, with its temporary files under pytest's; nbclient
raises on the first cell that fails.
"""

import json
import os
import sys
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"


def _read() -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    return nb


def test_notebook_is_kept_without_outputs() -> None:
    code = [cell for cell in _read().cells if cell.cell_type == "code"]
    assert len(code) >= 10, f"only {len(code)} code cells"
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"code cell {i} has outputs"
        assert cell.execution_count is None, f"code cell {i} has an execution count"


def _this_python_kernel(folder: Path) -> KernelManager:
    """A kernel manager that starts ``sys.executable -m ipykernel_launcher``."""
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    specs = KernelSpecManager(kernel_dirs=[str(folder / "kernels")])
    return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


def test_notebook_runs_top_to_bottom_in_a_fresh_kernel(tmp_path: Path) -> None:
    nb = _read()
    work = tmp_path / "work"
    work.mkdir()
    km = _this_python_kernel(tmp_path)
    assert km.kernel_spec.argv[0] == sys.executable
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    scratch = tmp_path / "tmp"  # the notebook's figures and run folders (tempfile.mkdtemp)
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "TMPDIR": str(scratch)}
    client = NotebookClient(
        nb, km=km, timeout=300, allow_errors=False, resources={"metadata": {"path": str(work)}}
    )
    client.execute(env=env)  # raises CellExecutionError at the first failing cell

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    gifs = [out for out in outputs if "image/gif" in out.get("data", {})]
    # MLP curves and regions, attention before/after/over training, backward error, max-margin
    assert len(images) >= 7 and len(gifs) == 1, (len(images), len(gifs))
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "relative error" in text and "correlation with W_mm" in text
    assert list(work.iterdir()) == [], "the notebook wrote into its working folder"
    (folder,) = scratch.iterdir()
    assert (folder / "attention" / "attention_over_training.gif").is_file()
