"""Studies: one shape for every experiment the project runs and every result it reproduces.

A study is a module (or package) with

- ``NAME``: what sweeps, run ids and ``sweep.json`` call it;
- ``DEFAULTS``: every option of one run and its default, ``seed`` among them;
- ``resolve(config) -> dict``: the defaults filled in, ``ValueError`` naming an unknown option or
  a bad value;
- ``run_experiment(config, run_dir, *, progress=None) -> metrics``: one run, written to its run
  folder through :mod:`mlp.train.folders` (``metrics.json`` last);
- optionally ``PRELOAD``, the modules a run imports on first use (a sweep's worker processes
  start with them imported), and ``reproduce(out, ...)``: its seeds through the one sweep
  (:func:`mlp.train.sweep.sweep`) into ``out``, then ``results.json``, ``results.md`` and
  figures.

:data:`EXPERIMENTS` names the studies for the command line (``scripts/sweep.py EXPERIMENT``);
any importable module of this shape works too. A new study is a new module here and a line in
this table.
"""

#: Short name -> module, for ``scripts/sweep.py`` (a module name works there too).
EXPERIMENTS = {
    "attention": "attnlab.studies.attention",
    "mlp": "mlp.experiment",
    "max-margin": "attnlab.studies.max_margin",
    "icl": "attnlab.studies.icl",
    "icl-depth": "attnlab.studies.icl_depth",
    "stack": "attnlab.studies.stack",
    "svm-kq": "attnlab.studies.svm_kq",
    "svm-multi-token": "attnlab.studies.svm_multi_token",
    "svm-rank": "attnlab.studies.svm_rank",
    "induction": "attnlab.studies.induction",
}
