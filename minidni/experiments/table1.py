"""``python -m minidni.run table1``: the MNIST FCN rows of Table 1, and the p_update sweep, at a stated budget.

    python -m minidni.run table1 --data-dir ../shared/data                  # Table 1 rows
    python -m minidni.run table1 --data-dir ../shared/data --sweep p-update # asynchronous updates

Every run is one ``python -m minidni.run mnist`` command (its own folder under
``--out`` with summary.json and figures), ``--workers`` at a time as local
processes or Ray tasks (``--executor``, ``--ray-address``:
:mod:`minidni.experiments.grid`); a run that fails is listed with its command and
makes the command exit 1, the others are tabulated.

Table mode writes ``<figures>/table1_mnist.md`` (our final test error beside
the paper's, with steps, learning rates, SG size, wall time and steps/s of
every run), ``table1_mnist.json`` and ``table1_mnist.png`` (test error vs
steps, one panel per depth). Sweep mode trains a ``--sweep-layers``-layer FCN
with each method at each ``--p-values`` and writes ``p_update_sweep.png``
(final test error vs p_update) and ``p_update_sweep.json``.

The paper trained 500k steps at lr 3e-5 (decayed at 300k and 400k); that is
days of CPU here, so the defaults are a budget (``--steps``, a larger
``--lr``, a narrower DNI synthesizer ``--sg-width``) and the outputs state it.
``--resume`` reuses runs whose summary.json already holds the same options.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from minidni import backend
from minidni.cli import (MAX_SEED, command_main, int_range, make_parser, output_path, positive_float, positive_int,
                         prepare_out_dir, probability, seed_int)
from minidni.experiments.feedforward import _options, check_fits, load_dataset
from minidni.experiments.feedforward import make_parser as make_mnist_parser
from minidni.experiments.grid import Cell, add_grid_args, check_distinct, choose_executor, read_summary, run_cells
from minidni.io import portable_paths, save_figure, write_json, write_text

PROG = "python -m minidni.run table1"

# Table 1 (arXiv v1), MNIST FCN, % test error after 500k steps: no-bprop / bprop / DNI / cDNI.
PAPER_MNIST_FCN = {
    3: {"no-bprop": 9.3, "bprop": 2.0, "dni": 1.9, "cdni": 2.2},
    4: {"no-bprop": 12.6, "bprop": 1.8, "dni": 2.2, "cdni": 1.9},
    5: {"no-bprop": 16.2, "bprop": 1.8, "dni": 3.4, "cdni": 1.7},
    6: {"no-bprop": 21.4, "bprop": 1.8, "dni": 4.3, "cdni": 1.6},
}
METHODS = ("no-bprop", "bprop", "dni", "cdni")
COLORS = {"no-bprop": "tab:blue", "bprop": "tab:orange", "dni": "tab:green", "dni, 2x1024 SG": "tab:purple",
          "cdni": "tab:red"}


def _parser() -> argparse.ArgumentParser:
    p = make_parser(PROG, "Reproduce the MNIST FCN rows of Table 1 (or the p_update sweep) at a stated budget.")
    p.add_argument("--sweep", choices=("p-update",), default=None, help="run the p_update sweep instead of Table 1")
    p.add_argument("--layers", type=int_range(min(PAPER_MNIST_FCN), max(PAPER_MNIST_FCN)), nargs="+", default=[3, 6],
                   help="FCN depths (Table 1 rows)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods (Table 1 columns)")
    p.add_argument("--steps", type=positive_int, default=4000, help="training steps per run (paper: 500k)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam lr of modules (paper: 3e-5)")
    p.add_argument("--lr-schedule", choices=("scaled-paper", "none"), default="scaled-paper",
                   help="scaled-paper: lr / 10 at 60 %% and 80 %% of --steps (the paper's 300k and 400k of 500k)")
    p.add_argument("--sg-lr", type=positive_float, default=None, help="synthesizers' lr (default: --lr)")
    p.add_argument("--sg-width", type=positive_int, default=256,
                   help="hidden units of DNI's two-hidden-layer synthesizer (paper: 1024); cDNI's is linear")
    p.add_argument("--paper-sg-layers", type=int_range(min(PAPER_MNIST_FCN), max(PAPER_MNIST_FCN)), nargs="*", default=[3],
                   help="depths at which DNI also runs with the paper's 1024-unit synthesizer (costly on a CPU)")
    p.add_argument("--batch", type=positive_int, default=256, help="minibatch size (paper: 256)")
    p.add_argument("--eval-every", type=positive_int, default=250, help="steps between test evaluations")
    p.add_argument("--log-every", type=positive_int, default=100, help="steps between SG diagnostics")
    p.add_argument("--sweep-layers", type=int_range(min(PAPER_MNIST_FCN), max(PAPER_MNIST_FCN)), default=4,
                   help="FCN depth of the p_update sweep (paper: 4)")
    p.add_argument("--sweep-methods", nargs="+", choices=METHODS, default=["bprop", "dni", "cdni"],
                   help="methods of the p_update sweep")
    p.add_argument("--p-values", type=probability, nargs="+", default=[1.0, 0.5, 0.2, 0.05],
                   help="p_update values of the sweep")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished runs with identical options (with local processes, continue interrupted ones)")
    add_grid_args(p, default_workers=1)
    p.add_argument("--backend", choices=backend.BACKENDS, default="numpy")
    p.add_argument("--seed", type=seed_int, default=0, help=f"random seed, 0 to {MAX_SEED}")
    p.add_argument("--data-dir", type=Path, default=None, help="data folder holding mnist/")
    p.add_argument("--out", type=output_path, default=Path("runs/table1"), help="folder of the individual runs")
    p.add_argument("--figures", type=output_path, default=Path("figures"), help="folder of the tables and figures")
    return p


def _milestones(args) -> list[int]:
    """The paper's decay steps (300k and 400k of 500k) scaled to --steps; none for very short runs."""
    if args.lr_schedule == "none":
        return []
    return sorted({m for m in (int(0.6 * args.steps), int(0.8 * args.steps)) if m > 0})


def _run_argv(args: argparse.Namespace, *, layers: int, method: str, p_update: float, sg_width: int) -> list[str]:
    """The ``python -m minidni.run mnist`` options of one run (without ``--out``)."""
    argv = ["--model", "fcn", "--layers", str(layers), "--method", method, "--steps", str(args.steps),
            "--batch", str(args.batch), "--lr", str(args.lr), "--lr-decay-steps", *map(str, _milestones(args)),
            "--eval-every", str(args.eval_every),
            "--log-every", str(args.log_every), "--p-update", str(p_update), "--sg-width", str(sg_width),
            "--backend", args.backend, "--seed", str(args.seed), "--no-progress"]
    argv += ["--data-dir", str(args.data_dir)] if args.data_dir else []
    return argv + (["--sg-lr", str(args.sg_lr)] if args.sg_lr else [])


def _name(layers: int, method: str, p_update: float, sg_width: int, args) -> str:
    return (f"fcn{layers}-{method}" + (f"-p{p_update:g}" if p_update != 1.0 else "")
            + (f"-w{sg_width}" if sg_width != args.sg_width else ""))


def _run_all(args, configs: list[dict]) -> dict[str, dict]:
    """Train every configuration (``layers``, ``method``, ``p_update``, ``sg_width``) as a grid cell, reusing
    finished ones with --resume; returns {name: summary}, a failed run's summary being ``{"error", "command"}``."""
    executor = choose_executor(args.executor, args.workers, args.ray_address)
    results, cells = {}, []
    for c in configs:
        name = _name(c["layers"], c["method"], c["p_update"], c["sg_width"], args)
        out = args.out / name
        argv = ["mnist", *_run_argv(args, **c)]
        options = _options(make_mnist_parser("mnist").parse_args([*argv[1:], "--out", str(out)]))
        old = read_summary(out / "summary.json") if args.resume else {}
        if old and {k: old.get("options", {}).get(k) for k in options} == options:
            print(f"{PROG}: reusing {out / 'summary.json'}", file=sys.stderr)
            results[name] = old
            continue
        if old:
            print(f"{PROG}: --resume: {out / 'summary.json'} is from other options; running {name} again",
                  file=sys.stderr)
        if executor == "processes" and args.resume and (out / "checkpoint.npz").is_file():
            argv.append("--resume")
        (out / "summary.json").unlink(missing_ok=True)
        cells.append(Cell(key=(name,), argv=argv, out=out))
    print(f"{PROG}: {len(configs)} runs ({len(results)} reused), {args.workers} at a time as {executor}",
          file=sys.stderr, flush=True)
    for cell, result in run_cells(cells, workers=args.workers, executor=executor, ray_address=args.ray_address,
                                  ray_timeout=args.ray_timeout):
        name = cell.key[0]
        if result.returncode != 0:
            command = "python -m minidni.run " + shlex.join(portable_paths([*cell.argv, "--out", str(cell.out)]))
            results[name] = {"error": result.error, "command": command}
            print(f"{PROG}: {name}: FAILED: {result.error} (command: {command})", file=sys.stderr, flush=True)
            continue
        s = results[name] = read_summary(cell.out / "summary.json")
        print(f"{PROG}: {name}: test error {s['test_error_percent']:.2f} % after {s['steps']} steps "
              f"({s['steps_per_second']:.1f} steps/s, {s['wall_seconds']:.0f} s)", file=sys.stderr, flush=True)
    return results


def _check_grid(args) -> None:
    """Repeated layers, methods or p values would train the same run twice and count it twice."""
    check_distinct(args, ("layers", "methods", "sweep_methods", "p_values"))
    for layers in sorted(set(args.layers) | {args.sweep_layers}):
        for method in set(args.methods) | set(args.sweep_methods):
            run_args = make_mnist_parser("mnist").parse_args(_run_argv(
                args, layers=layers, method=method, p_update=1.0, sg_width=max(args.sg_width, 1024)))
            check_fits(run_args, "mnist")


def _budget_line(args) -> str:
    sg_lr = args.sg_lr or args.lr
    decay = ", ".join(map(str, _milestones(args))) or "never"
    also = "" if args.sweep else f", also run at depths {args.paper_sg_layers or 'none'}"
    return (f"Budget: {args.steps} steps of batch {args.batch} (paper: 500k), Adam lr {args.lr:g} divided by 10 at "
            f"steps {decay} (paper: 3e-5, /10 at 300k and 400k), synthesizer lr {sg_lr:g} (decayed alike); DNI's "
            f"synthesizer: 2 hidden layers of {args.sg_width} units with BN (paper: 1024{also}); cDNI's: linear on "
            f"[h, one-hot label] (as the paper); seed {args.seed}, backend {args.backend}.")


def _command(args) -> str:
    """The command that reproduces these results (the options that change them)."""
    if args.sweep:
        what = ["--sweep", "p-update", "--sweep-layers", str(args.sweep_layers), "--sweep-methods",
                *args.sweep_methods, "--p-values", *(f"{p:g}" for p in args.p_values)]
    else:
        what = ["--layers", *map(str, args.layers), "--methods", *args.methods]
    budget = ["--steps", str(args.steps), "--lr", f"{args.lr:g}", "--lr-schedule", args.lr_schedule,
              "--sg-width", str(args.sg_width),
              *([] if args.sweep else ["--paper-sg-layers", *map(str, args.paper_sg_layers)]),
              "--batch", str(args.batch), "--eval-every", str(args.eval_every), "--seed", str(args.seed),
              "--backend", args.backend] + (["--sg-lr", f"{args.sg_lr:g}"] if args.sg_lr else [])
    return " ".join([PROG, *what, *budget])


def _config(layers: int, method: str, p_update: float = 1.0, sg_width: int | None = None, *, args) -> dict:
    return {"layers": layers, "method": method, "p_update": p_update, "sg_width": sg_width or args.sg_width}


def _failures(results: dict[str, dict]) -> list[str]:
    return [f"- {name}: `{s['command']}`: {s['error']}" for name, s in results.items() if "error" in s]


def _table(args) -> list[str]:
    """Train and tabulate Table 1; returns the lines naming failed runs (not in the table)."""
    wanted = []  # (layers, method, label, config)
    for L in args.layers:
        for m in args.methods:
            wanted.append((L, m, m, _config(L, m, args=args)))
            if m == "dni" and L in args.paper_sg_layers and args.sg_width != 1024:
                wanted.append((L, m, "dni, 2x1024 SG", _config(L, m, sg_width=1024, args=args)))
    results = _run_all(args, [c for *_, c in wanted])
    runs = [(L, m, label, results[_name(**c, args=args)]) for L, m, label, c in wanted]
    failed = _failures(results)
    runs = [r for r in runs if "error" not in r[3]]
    lines = ["# Table 1 (MNIST FCN): % test error, ours beside the paper's", "",
             _budget_line(args), "",
             "| layers | method | ours (%) | paper (%) | steps | lr | SG | wall (s) | steps/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for L, m, label, s in runs:
        sg = {"dni": f"2x{s['sg_width']}", "cdni": "linear"}.get(m, "-")
        lines.append(f"| {L} | {m} | {s['test_error_percent']:.2f} | {PAPER_MNIST_FCN[L][m]} | {s['steps']} | "
                     f"{s['options']['lr']:g} | {sg} | {s['wall_seconds']:.0f} | {s['steps_per_second']:.1f} |")
    if failed:
        lines += ["", "Failed runs (not in the table):"] + failed
    lines += ["", "The paper's DNI synthesizer has 2x1024 hidden units; ours defaults to a narrower one for time "
              "(see the 2x1024 rows). Paper numbers are after 500k steps; ours after the budget above.", "",
              f"Runs: `{portable_paths(args.out)}/fcn<layers>-<method>[-w<width>]/summary.json`.", "",
              f"Command: `{_command(args)}`", ""]
    args.figures.mkdir(parents=True, exist_ok=True)
    write_text(args.figures / "table1_mnist.md", "\n".join(lines))
    keep = ("test_error_percent", "steps", "wall_seconds", "steps_per_second", "sg_width", "sg_hidden")
    write_json(args.figures / "table1_mnist.json", {
        "budget": _budget_line(args), "command": _command(args), "paper": PAPER_MNIST_FCN,
        "ours": [{"layers": L, "method": m, "label": label, **{k: s[k] for k in keep}, "curve": s["curves"]["evals"]}
                 for L, m, label, s in runs]})
    if runs:  # (no figure when every run failed)
        _plot_table(runs, args, args.figures / "table1_mnist.png")
    print("\n".join(lines))
    return failed


def _percent_log_axis(ax) -> None:
    """A log-scale y axis of percentages with plain tick labels (1, 2, 5, 10, ...)."""
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter  # noqa: PLC0415

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FixedLocator([0.5, 1, 2, 5, 10, 20, 50, 100]))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="both", alpha=0.3)


def _plot_table(runs: list, args, path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    depths = list(dict.fromkeys(L for L, *_ in runs))
    fig, axes = plt.subplots(1, len(depths), figsize=(5.5 * len(depths), 4.2), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, L in zip(axes[0], depths):
        for _, m, label, s in (r for r in runs if r[0] == L):
            evals = s["curves"]["evals"][1:]  # step 0 (untrained, ~90 %) would flatten the log scale
            ax.plot([e["step"] for e in evals], [e["test_error_percent"] for e in evals], color=COLORS.get(label),
                    label=f"{label}: {s['test_error_percent']:.2f} % (paper {PAPER_MNIST_FCN[L][m]} %)")
        _percent_log_axis(ax)
        ax.set_xlabel("training step (minibatches of 256)")
        ax.set_title(f"MNIST FCN, {L} hidden layers")
        ax.legend(fontsize=8, title="final test error", title_fontsize=8, loc="upper center",
                  bbox_to_anchor=(0.5, -0.15), ncol=2)
    axes[0][0].set_ylabel("test error (%)")
    fig.suptitle(f"Table 1 at a budget: {args.steps} steps, lr {args.lr:g} (paper: 500k steps, lr 3e-5)", fontsize=10)
    save_figure(fig, path)
    plt.close(fig)


PAPER_SWEEP = ("Paper (4-layer MNIST FCN, 500k steps): with synthetic gradients, p_update = 0.2 still reaches 2 % "
               "test error, and cDNI still trains at p_update = 0.05; without DNI the first layer would update with "
               "probability p^3 (its gradient must come through every layer above). Ours: with bprop, a skipped "
               "module stops the backward there, so module i of n updates with probability p^(n-i) (p^4 for the "
               "bottom one of 4 modules).")


def _sweep_markdown(args, results: dict) -> str:
    """``p_update_sweep.md``: final test error per p_update (rows) and method (columns), budget and command."""
    methods = list(results)
    ps = sorted({p for row in results.values() for p in row}, reverse=True)
    lines = [f"# p_update sweep (MNIST FCN-{args.sweep_layers}): % test error after {args.steps} steps", "",
             _budget_line(args), "", PAPER_SWEEP, "",
             "| p_update | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for p in ps:
        lines.append(f"| {p:g} | " + " | ".join(f"{results[m][p]['test_error_percent']:.2f}" if p in results[m]
                                               else "-" for m in methods) + " |")
    top = max(ps)
    lines += ["", f"Rise of the error from p = {top:g}: " + "; ".join(
        f"{m} " + ", ".join(f"x{results[m][p]['test_error_percent'] / results[m][top]['test_error_percent']:.1f} "
                            f"at p = {p:g}" for p in ps if p != top and p in results[m])
        for m in methods if top in results[m]) + "."]
    lines += ["", "Wall seconds (steps/s) of each run: " + "; ".join(
        f"{m} p={p:g}: {s['wall_seconds']:.0f} s ({s['steps_per_second']:.1f})"
        for m, row in results.items() for p, s in row.items()) + ".", "",
        f"Runs: `{portable_paths(args.out)}/fcn{args.sweep_layers}-<method>[-p<p>]/summary.json`; figure `p_update_sweep.png`.", "",
        f"Command: `{_command(args)}`", ""]
    return "\n".join(lines)


def _sweep(args) -> list[str]:
    """Train and plot the p_update sweep; returns the lines naming failed runs (left out of it)."""
    L = args.sweep_layers
    configs = {(m, p): _config(L, m, p, args=args) for m in args.sweep_methods for p in args.p_values}
    done = _run_all(args, list(configs.values()))
    failed = _failures(done)
    results = {m: {p: done[_name(**configs[m, p], args=args)] for p in args.p_values
                   if "error" not in done[_name(**configs[m, p], args=args)]} for m in args.sweep_methods}
    args.figures.mkdir(parents=True, exist_ok=True)
    write_json(args.figures / "p_update_sweep.json", {
        "budget": _budget_line(args), "layers": L, "command": _command(args),
        "paper": "4-layer MNIST FCN: p_update = 0.2 still reaches 2 % error; cDNI trains at p_update = 0.05",
        "ours": {m: {str(p): {k: s[k] for k in ("test_error_percent", "steps", "wall_seconds", "steps_per_second")}
                     | {"curve": s["curves"]["evals"]} for p, s in row.items()} for m, row in results.items()}})
    write_text(args.figures / "p_update_sweep.md", _sweep_markdown(args, results))
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.ticker import NullLocator  # noqa: PLC0415

    fig, (ax, ax_curve) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for m, row in results.items():
        ps = sorted(row)
        ax.plot(ps, [row[p]["test_error_percent"] for p in ps], marker="o", color=COLORS[m], label=m)
        for p, style in zip(sorted(row, reverse=True), ("-", "--", "-.", ":", (0, (1, 3)))):
            evals = row[p]["curves"]["evals"][1:]
            ax_curve.plot([e["step"] for e in evals], [e["test_error_percent"] for e in evals], color=COLORS[m],
                          linestyle=style, label=f"{m}, p={p:g}")
    ax.axhline(2.0, color="grey", linestyle=":", label="paper: 2 % at p = 0.2 (500k steps)")
    ax.set_xscale("log")
    ax.set_xticks(sorted(args.p_values), labels=[f"{p:g}" for p in sorted(args.p_values)])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("p_update (probability a module updates in a step)")
    ax.set_ylabel(f"final test error (%) after {args.steps} steps")
    ax.set_title(f"MNIST FCN-{L}: asynchronous updates")
    for a in (ax, ax_curve):
        _percent_log_axis(a)
    ax_curve.set_xlabel("training step (minibatches of 256)")
    ax_curve.set_ylabel("test error (%)")
    ax_curve.set_title("learning curves")
    ax.legend(fontsize=7)
    ax_curve.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    save_figure(fig, args.figures / "p_update_sweep.png")
    plt.close(fig)
    for m, row in results.items():
        print(f"{m}: " + ", ".join(f"p={p:g}: {s['test_error_percent']:.2f} %" for p, s in row.items()))
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> int:
        _check_grid(args)
        choose_executor(args.executor, args.workers, args.ray_address)  # Ray missing, or an address without it
        load_dataset("mnist", args.data_dir)  # missing or corrupt MNIST: one line now, not one per run
        prepare_out_dir(args.out)
        prepare_out_dir(args.figures, option="--figures")
        failed = (_sweep if args.sweep else _table)(args)
        if failed:
            print(f"{PROG}: error: {len(failed)} runs failed:\n" + "\n".join(failed), file=sys.stderr)
            return 1
        return 0

    return command_main(PROG, _parser(), argv, body)
