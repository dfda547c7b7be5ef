"""The benchmark's text report and its targets.

Each part's lines start with a heading line, then its table in the Markdown form of
``docs/performance.md`` (medians), so that a new run's tables can replace the page's; below a
table, how many rounds were kept, how busy other processes kept the cores, and the largest
interquartile range relative to its median (``bench.json`` keeps every sample).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from attnlab.bench.plan import Part, TargetValue
from attnlab.bench.timing import threads_text
from mlp.threads import usable_cores

#: Targets (float64; the step's at the largest d; medians of one run). ``*_max``: at most,
#: ``*_min``: at least.
TARGETS = {
    "default_over_1_thread_max": 0.6,  # the step at the default thread count / 1 thread
    "vs_torch_default_max": 0.7,  # attnlab / torch, both at their default thread count
    "vs_plain_1_thread_max": 1.15,  # attnlab / plain matmul, one thread
    "vs_torch_1_thread_max": 0.8,  # attnlab / torch, one thread
    "roof_fraction_1_thread_min": 0.40,  # attnlab's GFLOP/s / a large matmul's, one thread
    "demo_default_over_1_thread_max": 1.1,  # the demo's small step: default / 1 thread
    "memory_ratio_max": 3.0,  # peak memory of the step / cached activations
    "research_vs_torch_max": 0.8,  # the trainer's update / PyTorch's, at a study's size
    "stack_vs_torch_max": 0.8,  # the stack's step / PyTorch's (L=2, H=4, C=64, d=64, n=256)
}


#: The share of the cores other processes may use during a timing before the report warns.
BUSY = 0.25
#: How the research table writes the optimizers' names.
OPTIMIZER_NAMES = {"sgd": "SGD", "ngd": "normalized GD", "adam": "Adam"}


# --- formatting --------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    """``"62.0 ms"``, ``"0.80 ms"``, ``"0.052 ms"``: three significant digits or more."""
    t = seconds * 1e3
    return f"{t:.1f} ms" if t >= 10 else f"{t:.2f} ms" if t >= 0.1 else f"{t:.3f} ms"


def ratio(x: float | None) -> str:
    return f"{x:.2f}x" if x is not None else "n/a"


def table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    """A Markdown table's lines."""
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]


def rounds_text(rounds: Mapping[str, Any]) -> str:
    return (
        f"{rounds['kept']} of {rounds['rounds']} rounds kept; other processes used "
        f"{rounds['other_load_median']:.0%} of the cores (median)"
    )


def spread_text(times: Mapping[str, Mapping[str, Any]]) -> str:
    """The largest interquartile range among ``times`` (name -> summary), relative to its
    median."""
    name, s = max(times.items(), key=lambda kv: (kv[1]["q75"] - kv[1]["q25"]) / kv[1]["median"])
    share = (s["q75"] - s["q25"]) / s["median"]
    return f"largest interquartile range: {share:.1%} of its median ({name})"


# --- the parts ---------------------------------------------------------------------------------


def mlp_report(r: dict[str, Any]) -> list[str]:
    net = r["network"]
    lines = [
        "",
        f"MLP (d={net['d']}, m={net['m']}, k={net['k']}): per-sample loop time / vectorized time",
    ]
    header = ("n", "forward speedup", "loss and gradients speedup", "vectorized loss and gradients")
    lines += table(
        header,
        (
            (
                f"{x['n']:,}",
                f"{x['speedup_forward']:.0f}x",
                f"{x['speedup_step']:.0f}x",
                ms(x["times"]["step"]["median"]),
            )
            for x in r["loops"]
        ),
    )
    steps = ", ".join(f"{x['n']:,}: {ms(x['times']['step']['median'])}" for x in r["vectorized"])
    lines.append(f"vectorized loss and gradients against n: {steps}")
    lines.append(f"log-log slope (n >= {r['slope_fit_n'][0]:,}): {r['slope_step']:.2f}")
    return lines


def step_report(r: dict[str, Any]) -> list[str]:
    r0 = r["rows"][0]
    pinned = str(r["pinned"])
    lines = [
        "",
        f"attention step (self, mean pool, linear head, logistic), n={r0['n']}, C={r0['c']}: "
        f"default threads, then {threads_text(pinned)}; medians",
    ]
    header = ("threads", "dtype", "d", "attnlab", "GFLOP/s", "of roof", "plain matmul")
    header += ("vs plain", "PyTorch", "vs PyTorch")
    rows = []
    for lab in ("default", pinned):
        for row in r["rows"]:
            t, m = row["times"][lab], row[lab]
            torch = ms(t["torch"]["median"]) if "torch" in t else "n/a"
            rows.append(
                (
                    lab,
                    row["dtype"],
                    row["d"],
                    ms(t["attnlab"]["median"]),
                    f"{m['gflops']:.1f}",
                    f"{m['roof_fraction']:.0%}",
                    ms(t["plain"]["median"]),
                    ratio(m["vs_plain"]),
                    torch,
                    ratio(m["vs_torch"]),
                )
            )
    lines += table(header, rows)
    lines.append(f"default threads / {threads_text(pinned)}, each implementation:")
    for row in r["rows"]:
        ratios = ", ".join(f"{k} {v:.2f}x" for k, v in row["default_over_pinned"].items())
        roof = ", ".join(f"{lab} {row[lab]['roof_gflops']:.1f}" for lab in ("default", pinned))
        lines.append(f"  {row['dtype']} d={row['d']}: {ratios} (roof GFLOP/s: {roof})")
        lines.append(f"    {rounds_text(row['rounds'])}")
    return lines + spread_and_note(r, lambda row: f"{row['dtype']}, d={row['d']}")


def spread_and_note(r: dict[str, Any], label: Callable[[dict[str, Any]], str]) -> list[str]:
    """The spread of every timed sample of ``r["rows"]`` (each named by its implementation, its
    thread count and ``label(row)``), then the note on PyTorch, if any."""
    times = {
        f"{k}, {threads_text(lab)}, {label(row)}": s
        for row in r["rows"]
        for lab, ts in row["times"].items()
        for k, s in ts.items()
    }
    lines = [spread_text(times)]
    if r["torch_note"]:
        lines.append(f"note: {r['torch_note']}")
    return lines


def threads_report(r: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"the step on k threads (float64, n={r['n']}, d={r['d']}, C={r['c']}, {r['cores']} "
        f"usable cores): medians and speedup over 1 thread",
    ]
    torch = "torch" in r["rows"][0]
    header = ("threads", "attnlab", "speedup") + (("PyTorch", "speedup") if torch else ())
    rows = []
    for row in r["rows"]:
        cells: tuple = (row["threads"], ms(row["attnlab"]["median"]), ratio(row["attnlab_speedup"]))
        if torch:
            cells += (ms(row["torch"]["median"]), ratio(row["torch_speedup"]))
        rows.append(cells)
    lines += table(header, rows)
    dm = r["demo"]
    lines.append(
        f"demo step (n={dm['n']}, d={dm['d']}, C={dm['c']}, self, last pool, MLP head): "
        f"default {ms(dm['times']['default']['median'])}, 1 thread "
        f"{ms(dm['times']['1']['median'])}, ratio {dm['default_over_1_thread']:.2f}"
    )
    lines.append(rounds_text(r["rounds"]))
    times = {
        f"{k}, {threads_text(row['threads'])}": row[k]
        for row in r["rows"]
        for k in ("attnlab", "torch")
        if k in row
    }
    times |= {f"demo, {threads_text(k)}": s for k, s in dm["times"].items()}
    lines.append(spread_text(times))
    if r["torch_note"]:
        lines.append(f"note: {r['torch_note']}")
    return lines


def scaling_report(r: dict[str, Any]) -> list[str]:
    cs = [x["c"] for x in r["by_c"]]
    ns = [x["n"] for x in r["by_n"]]
    lines = ["", f"scaling of the step (float64, d={r['d']}, one thread): log-log slopes"]
    lines.append(
        f"  C {cs[0]}..{cs[-1]} (n={r['by_c'][0]['n']}): {r['slope_c']:.2f} overall, "
        f"{r['slope_c_lower']:.2f} for C <= {cs[len(cs) // 2]}, "
        f"{r['slope_c_upper']:.2f} for C >= {cs[len(cs) // 2]} "
        f"(flop count: {r['flop_slope_c']:.2f})"
    )
    lines.append(
        f"  n {ns[0]}..{ns[-1]} (C={r['by_n'][0]['c']}): {r['slope_n']:.2f} overall, "
        f"{r['slope_n_lower']:.2f} for n <= {ns[len(ns) // 2]}, "
        f"{r['slope_n_upper']:.2f} for n >= {ns[len(ns) // 2]}"
    )
    lines += [f"  C={x['c']:>4}  {ms(x['times']['median'])}" for x in r["by_c"]]
    lines += [f"  n={x['n']:>6}  {ms(x['times']['median'])}" for x in r["by_n"]]
    return lines


def memory_report(r: dict[str, Any]) -> list[str]:
    lines = ["", "peak memory of the step / cached activations (X, Q, S, top, u, z); the memory"]
    lines.append("model's estimate of the step's allocations / their measured peak")
    for row in r["rows"] + r["by_c"]:
        lines.append(
            f"  {row['dtype']:>8} n={row['n']:>5} d={row['d']:>3} C={row['c']:>4}: "
            f"peak {row['peak_bytes'] / 2**20:8.1f} MiB, cached "
            f"{row['cached_bytes'] / 2**20:8.1f} MiB, ratio {row['ratio']:.2f}; "
            f"estimate {row['estimate_over_step_peak']:.2f}x the step's peak"
        )
    return lines


def describe_model(row: Mapping[str, Any]) -> str:
    """``"self attention, d = 6, C = 16, last pool, MLP head (16 hidden), cross-entropy; sgd lr
    0.3"`` from a research row."""
    kind = f"{row['attention']} attention" + (
        ", linear scores" if row["scores"] == "linear" else ""
    )
    if row["j"] is not None:
        kind += f" ({row['j']} {'query' if row['j'] == 1 else 'queries'})"
    head = f"MLP head ({row['hidden']} hidden)" if row["head"] == "mlp" else "linear head"
    if "v" not in row["trained"] and row["head"] == "linear":
        head = "fixed " + head
    loss = row["loss"].replace("_", "-")
    name = row["optimizer"]
    update = OPTIMIZER_NAMES.get(name.removeprefix("averaged-"), name)
    if name.startswith("averaged-"):
        update = "averaged " + update
    return (
        f"{kind}, d = {row['d']}, C = {row['c']}, {row['pool']} pool, {head}, {loss}; "
        f"{update} lr {row['lr']:g}"
    )


def research_report(r: dict[str, Any]) -> list[str]:
    pinned = str(r["pinned"])
    lines = [
        "",
        "research sizes: the trainer's whole update (batch, loss_and_grads, optimizer) against "
        f"the same update in PyTorch autograd (float64), default threads, then "
        f"{threads_text(pinned)}; medians",
    ]
    lines += [f"  {row['name']}: {describe_model(row)}; batch {row['n']}" for row in r["rows"]]
    header = ("threads", "size", "attnlab", "PyTorch", "attnlab / PyTorch")
    rows = []
    for lab in ("default", pinned):
        for row in r["rows"]:
            t = row["times"][lab]
            torch = ms(t["torch"]["median"]) if "torch" in t else "n/a"
            rows.append((lab, row["name"], ms(t["attnlab"]["median"]), torch))
            rows[-1] += (ratio(row["vs_torch"][lab]),)
    lines += table(header, rows)
    errors = [row["max_rel_error"] for row in r["rows"] if "max_rel_error" in row]
    if errors:
        lines.append(
            "checked before timing, largest relative error: loss and gradients "
            f"{max(e['loss_and_grads'] for e in errors):.1e}, the first updates "
            f"{max(e['updates'] for e in errors):.1e}"
        )
    for row in r["rows"]:
        lines.append(f"  {row['name']}: {rounds_text(row['rounds'])}")
    return lines + spread_and_note(r, lambda row: row["name"])


# --- targets -----------------------------------------------------------------------------------


def step_targets(r: dict[str, Any]) -> list[TargetValue]:
    """The float64 row of the largest ``d``."""
    rows = [x for x in r["rows"] if x["dtype"] == "float64"]
    if not rows:
        return []
    row = max(rows, key=lambda x: x["d"])
    one = row.get("1")
    out: list[TargetValue] = []
    if one is not None and usable_cores() > 1:
        value = row["default_over_pinned"]["attnlab"]
        out.append(("default / 1 thread", value, "default_over_1_thread_max"))
    out.append(("vs torch (default threads)", row["default"]["vs_torch"], "vs_torch_default_max"))
    if one is not None:
        out += [
            ("vs plain matmul (1 thread)", one["vs_plain"], "vs_plain_1_thread_max"),
            ("vs torch (1 thread)", one["vs_torch"], "vs_torch_1_thread_max"),
            ("roof fraction (1 thread)", one["roof_fraction"], "roof_fraction_1_thread_min"),
        ]
    return out


def threads_targets(r: dict[str, Any]) -> list[TargetValue]:
    value = r["demo"]["default_over_1_thread"]
    return [("demo step default / 1 thread", value, "demo_default_over_1_thread_max")]


def memory_targets(r: dict[str, Any]) -> list[TargetValue]:
    rows = [x for x in r["rows"] if x["dtype"] == "float64"]
    if not rows:
        return []
    return [("peak / cached", max(rows, key=lambda x: x["d"])["ratio"], "memory_ratio_max")]


def research_targets(r: dict[str, Any]) -> list[TargetValue]:
    """The ratios at the default thread count, of the sizes with a target."""
    return [
        (f"{row['name']} update vs torch", row["vs_torch"]["default"], "research_vs_torch_max")
        for row in r["rows"]
        if row["target"]
    ]


def check_targets(
    results: Mapping[str, Any], parts: Mapping[str, Part]
) -> dict[str, dict[str, Any]]:
    """Each measured part's target values against :data:`TARGETS` (a value of None, a column
    that did not run, is left out)."""
    out: dict[str, dict[str, Any]] = {}
    for name, part in parts.items():
        if name not in results:
            continue
        for label, value, key in part.targets(results[name]):
            if value is None:
                continue
            limit = TARGETS[key]
            op = "<=" if key.endswith("_max") else ">="
            met = value <= limit if op == "<=" else value >= limit
            out[label] = {"value": value, "op": op, "limit": limit, "met": bool(met)}
    return out


# --- the whole report --------------------------------------------------------------------------


def machine_text(m: Mapping[str, Any]) -> str:
    nb = m["numpy_blas"]
    text = (
        f"machine: {m['cores']} usable cores, {m['cpu']}, Python {m['python']}, numpy "
        f"{m['numpy']} with {nb.get('internal_api')} {nb.get('version')} "
        f"({nb.get('architecture')}, {nb.get('num_threads')} threads by default), attnlab on "
        f"{m['attnlab_threads']} threads by default"
    )
    torch = m.get("torch")
    if torch:
        text += f", torch {torch['version']} ({torch['threads']} threads by default)"
    return text


def busiest_load(results: Any) -> float:
    """The largest ``other_load_median`` anywhere in ``results`` (0 when none was measured)."""
    if isinstance(results, Mapping):
        own = results.get("other_load_median", 0.0)
        return max([own, *(busiest_load(v) for v in results.values())])
    if isinstance(results, list):
        return max([0.0, *(busiest_load(v) for v in results)])
    return 0.0


def report(results: Mapping[str, Any], parts: Mapping[str, Part]) -> list[str]:
    """The report's lines: the machine, each measured part's lines, the target checks, and a
    warning when other processes kept more than :data:`BUSY` of the cores during a timing."""
    lines = [machine_text(results["machine"])]
    for name, part in parts.items():
        if name in results:
            lines += part.report(results[name])
    if results.get("targets"):
        lines += ["", "targets (float64; the step's at the largest d; research: default threads):"]
        for name, t in results["targets"].items():
            lines.append(
                f"  {name:<34} {t['value']:.2f} (target {t['op']} {t['limit']}): "
                + ("met" if t["met"] else "MISSED")
            )
    load = busiest_load({name: results[name] for name in parts if name in results})
    if load > BUSY:
        lines += [
            "",
            f"warning: other processes used up to {load:.0%} of the cores during the kept "
            "rounds (median of a timing); on a machine this busy the ratios, above all those "
            "at the default thread count, are not reliable: run again on a quiet machine",
        ]
    return lines
