"""Commands that judge and ship tuned models: evaluate, promote, rollback, aliases, retrain.

Each parses its flags, calls one function of :mod:`vertex_tuner.release` (or
:mod:`vertex_tuner.api`), renders the result and picks the exit code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from vertex_tuner.cli._common import (
    EXIT_INTERRUPTED,
    echo_json,
    handle_errors,
    located,
    remember_record,
    stderr_console,
)
from vertex_tuner.cli.options import (
    alias_option,
    cloud_options,
    load,
    looks_like_spec,
    parse_timeout,
    spec_name,
    store_options,
    writable_dir,
    writable_store,
)

if TYPE_CHECKING:
    from vertex_tuner.evaluation.cost import EvaluationCost
    from vertex_tuner.evaluation.results import EvaluationResult
    from vertex_tuner.release import Promotion, RetrainOutcome
    from vertex_tuner.runstore import RunStore


def render_result(
    result: EvaluationResult,
    *,
    as_json: bool,
    report: str | None,
    history: Sequence[Any] = (),
) -> None:
    from vertex_tuner.evaluation.report import write_report

    if report:
        written = write_report(result, Path(report), history=history)
        stderr_console().print(f"report: {', '.join(str(p) for p in written)}", markup=False)
    if as_json:
        if result.verdict is not None and not result.verdict.passed:
            # The failure's one JSON document carries the result (no second document).
            remember_record(result)
        else:
            echo_json(result.to_json())
        return
    from rich.markup import escape

    from vertex_tuner.cli._render import evaluation_table

    console = stderr_console()
    console.print(evaluation_table(result))
    estimate = result.estimate
    if estimate:
        modes = sorted(set((result.binding.get("modes") or {}).values())) or ["online"]
        high, central = estimate.get("cost_high_usd"), estimate.get("cost_usd")
        cost = (
            f"estimated ${central:,.4f} (at most ${high:,.4f})"
            if central is not None and high is not None
            else "cost unknown (no price for " + ", ".join(estimate.get("unpriced") or []) + ")"
        )
        console.print(
            f"[dim]{estimate.get('requests', 0)} requests ({', '.join(modes)}), {cost}[/]"
        )
    if result.verdict is not None:
        # The explanation starts with "passed:" or "failed:".
        colour = "green" if result.verdict.passed else "red"
        console.print(f"[{colour}]gate[/] {escape(result.verdict.explanation)}")


@click.command()
@click.argument("ref", metavar="SPEC|RUN")
@cloud_options
@click.option(
    "--against",
    default="base,production",
    show_default=True,
    help="Comparison targets besides the tuned model: base, production or both.",
)
@click.option(
    "--report", metavar="DIR", help="Write report.md, report.html and results.json to DIR."
)
@click.option(
    "--checkpoints",
    is_flag=True,
    help="Evaluate every checkpoint endpoint of the run on the same held-out set (reports in "
    "DIR/<checkpoint>/); exits 5 unless at least one passes the gate.",
)
@click.option(
    "--mode",
    type=click.Choice(["online", "batch", "auto"]),
    help="online: generateContent per prompt; batch: Vertex batch prediction (half the price, "
    "off the online quota); auto: batch from evaluation.batch_threshold requests. Default: "
    "evaluation.mode.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show the requests, tokens and cost per target (and the judge's), and send nothing.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Attach to the batch jobs an earlier evaluation of the run created (after a timeout "
    "or Ctrl-C); creates none.",
)
@click.option(
    "--no-cache",
    "no_cache",
    is_flag=True,
    help="Generate every answer afresh (the cache otherwise answers what it has).",
)
@handle_errors
def evaluate(
    ref: str,
    sandbox: bool,
    as_json: bool,
    registry: str | None,
    project: str | None,
    location: str | None,
    against: str,
    report: str | None,
    checkpoints: bool,
    mode: str | None,
    dry_run: bool,
    resume: bool,
    no_cache: bool,
) -> None:
    """Compare the tuned model with the base and production models on held-out examples.

    A spec means the run of its current data and settings; a run id means that run. The
    held-out set is the one uploaded with the run. Exits 5 when the spec's gate
    (evaluation.promote_if) fails.
    """
    from vertex_tuner import release
    from vertex_tuner.cli._progress import ConsoleObserver
    from vertex_tuner.errors import SpecError
    from vertex_tuner.wiring import evaluator_for, open_context, service_for

    targets = [t.strip() for t in against.split(",") if t.strip()]
    if dry_run and checkpoints:
        raise click.UsageError("--dry-run shows one evaluation; leave out --checkpoints")
    writable_dir(report, "--report")
    spec = load(ref, sandbox) if looks_like_spec(ref) else None
    writable_store(registry, sandbox=sandbox, spec=spec)
    observer = ConsoleObserver(stderr_console(), quiet=as_json)
    try:
        with open_context(
            spec=spec, sandbox=sandbox, registry=registry, project=project, location=location
        ) as ctx:
            if spec is not None:
                record = release.current_run(service_for(ctx, observer), spec)
            else:
                record = ctx.runs.get(ref)
                if not record.spec_path or not Path(record.spec_path).is_file():
                    raise SpecError(
                        f"run {ref} was made from {record.spec_path or 'an unknown spec'}, "
                        "which is not here",
                        hint="run evaluate with the spec file instead of the run id",
                    )
                spec = load(record.spec_path, sandbox)
            evaluator = evaluator_for(ctx, observer)
            options: dict[str, Any] = {"against": targets, "mode": mode, "fresh": no_cache}
            if dry_run:
                cost = release.evaluation_estimate(evaluator, spec, record, **options)
            elif checkpoints:
                each = release.evaluate_checkpoints(
                    evaluator, spec, record, resume=resume, **options
                )
            else:
                result = release.evaluate_run(evaluator, spec, record, resume=resume, **options)
            history = trend(ctx.runs, spec.name) if report else []
    finally:
        observer.close()
    if dry_run:
        _render_estimate(cost, record.run_id, as_json=as_json, budget=spec.evaluation)
        return
    if checkpoints:
        _render_checkpoints(each, as_json=as_json, report=report, history=history)
        return
    render_result(result, as_json=as_json, report=report, history=history)
    release.check_gate(result)


def _render_estimate(cost: EvaluationCost, run_id: str, *, as_json: bool, budget: Any) -> None:
    """``evaluate --dry-run``: what would be sent and what it would cost."""
    limit = budget.max_cost_usd if budget is not None else None
    if as_json:
        echo_json({"dry_run": True, "run": run_id, **cost.to_json(), "max_cost_usd": limit})
        return
    click.echo(f"evaluation of run {run_id} (dry run: nothing was sent)")
    click.echo(cost.describe())
    if limit is not None:
        high = cost.cost_high_usd
        verdict = "within" if high is not None and high <= limit else "over"
        click.echo(f"evaluation.max_cost_usd ${limit:,.2f}: {verdict} budget")


def trend(runs: RunStore, spec_name: str) -> list[dict[str, Any]]:
    """The stored evaluations of the spec's latest runs, for a report's trend (a fixed number
    of reads, however many runs the spec has)."""
    from vertex_tuner.evaluation.report import TREND

    return [r.evaluation for r in runs.list(spec_name, newest=TREND) if r.evaluation]


def _render_checkpoints(
    each: list[tuple[str, EvaluationResult]],
    *,
    as_json: bool,
    report: str | None,
    history: Sequence[Any] = (),
) -> None:
    """One result per checkpoint; GateFailed (exit 5) when none passed its gate."""
    from vertex_tuner.errors import GateFailed
    from vertex_tuner.evaluation.report import write_report

    if report:
        for checkpoint, result in each:
            write_report(result, Path(report) / checkpoint, history=history)
        stderr_console().print(f"reports: {report}/<checkpoint>/", markup=False)
    passing = [cid for cid, r in each if r.verdict is None or r.verdict.passed]
    if as_json:
        doc = {"checkpoints": {cid: r.to_json() for cid, r in each}, "passed": passing}
        if passing:
            echo_json(doc)
        else:
            remember_record(doc)  # carried by the failure's one JSON document
    else:
        for checkpoint, result in each:
            stderr_console().print(f"checkpoint {checkpoint}", markup=False, style="bold")
            render_result(result, as_json=False, report=None)
    if not passing:
        raise GateFailed(
            f"no checkpoint of the run passed its gate ({len(each)} evaluated)",
            hint="the alias was not moved; see each checkpoint's report",
        )
    if not as_json:
        stderr_console().print(
            located(
                f"passed: {', '.join(passing)}; serve the best with: vertex-tuner promote "
                f"{each[0][1].spec} {each[0][1].run} --checkpoint best"
            ),
            markup=False,
        )


@click.command()
@click.argument("name")
@click.argument("run_id", metavar="[RUN]", required=False)
@alias_option
@click.option("--if-gate", is_flag=True, help="Only when the run passed its evaluation gate.")
@click.option(
    "--checkpoint",
    metavar="best|ID",
    help="Serve one of the run's checkpoints: its id, or 'best' (the passing one with the "
    "highest scores on the gate's metrics; implies --if-gate).",
)
@click.option(
    "--mirror-vertex",
    is_flag=True,
    help="Also set the alias on the model version in the Vertex Model Registry "
    "(needs the 'registry' extra).",
)
@click.option(
    "--no-smoke-test",
    "no_smoke_test",
    is_flag=True,
    help="Move the alias without first calling the model the way a service will (the alias "
    "history says it was skipped).",
)
@store_options
@handle_errors
def promote(
    name: str,
    run_id: str | None,
    alias: str,
    if_gate: bool,
    checkpoint: str | None,
    mirror_vertex: bool,
    no_smoke_test: bool,
    registry: str | None,
    sandbox: bool,
    as_json: bool,
) -> None:
    """Point NAME@ALIAS at RUN (default: NAME's newest successful run). NAME may be the
    spec's file.

    Before the alias moves, the model it would serve is called once the way a service calls
    it (the run's first held-out prompt, its evaluated generation settings, the endpoint's own
    region); if that fails the alias stays where it was (exit 6).
    """
    from vertex_tuner import api

    name = spec_name(name)
    if mirror_vertex and checkpoint:
        raise click.UsageError("--mirror-vertex sets the run's model version, not a checkpoint")
    if mirror_vertex:
        from vertex_tuner.backends.model_registry import ensure_available

        ensure_available(sandbox=sandbox)
    writable_store(registry, sandbox=sandbox)
    promotion = api.promote(
        name,
        run_id,
        alias=alias,
        if_gate=if_gate,
        registry=registry,
        sandbox=sandbox,
        checkpoint=checkpoint,
        smoke_test=not no_smoke_test,
    )
    if mirror_vertex:
        from vertex_tuner.backends.model_registry import mirror_alias

        mirror_alias(promotion.record, alias)
    _print_alias(promotion, as_json)


@click.command()
@click.argument("name")
@alias_option
@store_options
@handle_errors
def rollback(name: str, alias: str, registry: str | None, sandbox: bool, as_json: bool) -> None:
    """Move NAME@ALIAS back to the run it pointed at before (NAME may be the spec's file)."""
    from vertex_tuner import api

    name = spec_name(name)
    writable_store(registry, sandbox=sandbox)
    _print_alias(api.rollback(name, alias=alias, registry=registry, sandbox=sandbox), as_json)


@click.command()
@click.argument("name")
@store_options
@handle_errors
def aliases(name: str, registry: str | None, sandbox: bool, as_json: bool) -> None:
    """List NAME's aliases and their history (NAME may be the spec's file)."""
    from vertex_tuner.wiring import open_run_store

    name = spec_name(name)
    with open_run_store(registry, sandbox=sandbox) as runs:
        entries = runs.aliases(name)
        refused = runs.refused_moves(name) if entries or as_json else {}
    if as_json:
        echo_json(
            {
                "name": name,
                "aliases": {
                    a: {"run_id": e.run_id, "set_at": e.set_at, "history": list(e.history)}
                    for a, e in entries.items()
                },
                # Moves a smoke test refused, per alias: the alias did not move.
                "refused": {a: list(moves) for a, moves in refused.items()},
            }
        )
        return
    if not entries:
        stderr_console().print(f"{name} has no aliases yet", markup=False)
        return
    from vertex_tuner.cli._common import emit
    from vertex_tuner.cli._render import aliases_table

    lines = [f"{name}@{alias}\t{e.run_id}\t{e.set_at}" for alias, e in sorted(entries.items())]
    emit(aliases_table(name, entries), lines)


def _print_alias(promotion: Promotion, as_json: bool) -> None:
    if promotion.warning:
        stderr_console().print(f"warning: {promotion.warning}", markup=False, style="yellow")
    if as_json:
        echo_json(promotion.to_json())
        return
    served = f" checkpoint {promotion.entry.checkpoint}" if promotion.entry.checkpoint else ""
    click.echo(
        f"{promotion.name}@{promotion.alias} -> {promotion.record.run_id}{served} "
        f"({promotion.endpoint})"
    )
    if promotion.verdict:
        click.echo(f"on the passing verdict {promotion.verdict}")
    if promotion.smoke is not None:
        smoke = promotion.smoke
        where = f" in {smoke.location}" if smoke.location else ""
        click.echo(f"smoke test{where}: {smoke.detail} ({smoke.prompt or 'no call'})")


@click.command()
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@cloud_options
@click.option(
    "--wait-timeout",
    metavar="DURATION",
    default="5h",
    show_default=True,
    help="Stop waiting after this long: the outcome is 'running' (exit 0) and the next "
    "retrain attaches to the job.",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Submit again when the last job for the same data and spec failed.",
)
@click.option(
    "--base-model",
    metavar="MODEL",
    help="Re-tune the same data on this Gemini base; evaluated against what NAME@production "
    "serves with the spec's gate, and promoted only if it passes. The run records the lineage.",
)
@click.option(
    "--out",
    metavar="DIR",
    help="Write DIR/<spec>/outcome.json, record.json, evaluation.json and report/ per spec.",
)
@click.option(
    "--no-smoke-test",
    "no_smoke_test",
    is_flag=True,
    help="Move the alias without first calling the model the way a service will (the alias "
    "history says it was skipped).",
)
@handle_errors
def retrain(
    specs: tuple[str, ...],
    sandbox: bool,
    as_json: bool,
    registry: str | None,
    project: str | None,
    location: str | None,
    wait_timeout: str,
    retry_failed: bool,
    base_model: str | None,
    out: str | None,
    no_smoke_test: bool,
) -> None:
    """Retrain each SPEC: submit, wait, evaluate, and promote NAME@production on a passing gate.

    An unchanged spec and dataset is a no-op (its job is reused), and nothing is evaluated when
    NAME@production already serves the run. A promotion is smoke-tested first (see promote).
    Outcomes: promoted, unchanged and running (exit 0); gate-failed (5), smoke-failed (6),
    over-budget (3), failed (1), interrupted (130). Under GitHub Actions each
    spec adds a section to the job summary and its outcome, message, run_id and spec_name to the
    step's outputs.
    """
    from vertex_tuner import api
    from vertex_tuner.cli import github
    from vertex_tuner.cli._progress import ConsoleObserver

    timeout = parse_timeout(wait_timeout, "--wait-timeout")
    writable_dir(out, "--out")
    writable_store(registry, sandbox=sandbox)
    outcomes: list[RetrainOutcome] = []
    for spec in specs:
        observer = ConsoleObserver(stderr_console(), quiet=as_json)
        try:
            outcome = api.retrain(
                spec,
                sandbox=sandbox,
                registry=registry,
                project=project,
                location=location,
                wait_timeout=timeout,
                retry_failed=retry_failed,
                observer=observer,
                smoke_test=not no_smoke_test,
                base_model=base_model,
            )
        finally:
            observer.close()
        outcomes.append(outcome)
        report = _write_outputs(outcome, Path(out) if out else None)
        github.append_summary(github.summary_section(outcome, report))
        github.append_outputs(github.step_outputs(outcome))
        _render_outcome(outcome)
        # Workflow commands are read from stdout; with --json, stdout is the document.
        stream = sys.stderr if as_json else sys.stdout
        if os.environ.get("GITHUB_ACTIONS") == "true":
            for annotation in github.warning_annotations(outcome):
                print(annotation, file=stream, flush=True)
        if not outcome.ok:
            print(github.error_annotation(outcome), file=stream, flush=True)
        if outcome.exit_code == EXIT_INTERRUPTED:
            break
    failed = [o for o in outcomes if not o.ok]
    code = failed[0].exit_code if failed else 0
    if as_json:
        echo_json({"outcomes": [o.to_json() for o in outcomes], "exit_code": code})
    if code:
        sys.exit(code)


def _render_outcome(outcome: RetrainOutcome) -> None:
    from rich.markup import escape

    from vertex_tuner.cli import github

    console = stderr_console()
    colour = "green" if outcome.ok else "red"
    name = outcome.spec_name or outcome.spec_path
    line = github.final_line(outcome, markdown=False)
    console.print(f"[bold]{escape(name)}[/]: [{colour}]{escape(line)}[/]")
    for warning in outcome.warnings:
        console.print(f"  [yellow]warning:[/] {escape(warning)}")
    if outcome.error:
        console.print(f"  [dim]error:[/] {escape(outcome.error)}")
    if outcome.hint:
        console.print(f"  [dim]hint:[/] {escape(outcome.hint)}")


def _write_outputs(outcome: RetrainOutcome, out: Path | None) -> str | None:
    """The outcome's files under ``out/<spec file stem>/``; the report's Markdown, if any."""
    from vertex_tuner.evaluation.report import render_markdown, write_report

    report = render_markdown(outcome.evaluation) if outcome.evaluation else None
    if out is None:
        return report
    folder = out / Path(outcome.spec_path).stem
    folder.mkdir(parents=True, exist_ok=True)
    option = orjson.OPT_INDENT_2
    (folder / "outcome.json").write_bytes(orjson.dumps(outcome.to_json(), option=option))
    if outcome.record is not None:
        (folder / "record.json").write_bytes(orjson.dumps(outcome.record.to_json(), option=option))
    if outcome.evaluation is not None:
        (folder / "evaluation.json").write_bytes(
            orjson.dumps(outcome.evaluation.to_json(), option=option)
        )
        write_report(outcome.evaluation, folder / "report")
    return report
