"""`nnunet-transfer study {check,run,status,report,example}` and `nnunet-transfer demo`
(`register` and `register_examples` add them to the CLI)."""

from __future__ import annotations

import os

from nnunet_transfer.arguments import add_command, positive_int
from nnunet_transfer.study.demo import example_study, write_demo_study
from nnunet_transfer.study.grid import plans_of_source, transferred_plans, unranked_sources
from nnunet_transfer.study.spec import StudySpec
from nnunet_transfer.study.study_file import load_study


def load_with_environment(study_file: str) -> StudySpec:
    spec = load_study(study_file)
    # In-process steps (splits, evaluation, report) read nnU-Net's folders from the environment.
    for kind, folder in spec.nnunet.items():
        os.environ[f"nnUNet_{kind}"] = folder
    return spec


def check_summary(spec: StudySpec) -> str:
    """What `study check` says of a file without mistakes: the sources and their kinds, the
    grid, and what the study chose where the file is silent."""
    sources = "\n".join(_source_line(spec, s) for s in spec.sources)
    chosen = "".join(f"\n  {line}" for line in spec.defaults)
    return (f"Study {spec.name}: sources\n{sources}\nstrategies "
            f"{', '.join(s.name for s in spec.strategies)}; sizes {list(spec.sizes)}; "
            f"seeds {list(spec.seeds)}; "
            f"architectures {', '.join(spec.architectures)}; "
            f"analyses {', '.join(spec.analyses) or 'none'}; "
            f"executor {spec.executor.kind} x {spec.executor.jobs or 'default'}; files under "
            f"{spec.workdir}" + (f"\nChosen where the file is silent:{chosen}" if chosen else ""))


def _source_line(spec: StudySpec, source: str) -> str:
    """A source and its kind; for an nnssl encoder also how the study plans and ranks it."""
    line = f"  {source}: {spec.source_kind(source)}"
    nnssl = spec.models[source].nnssl if spec.is_model(source) else None
    if nnssl is None:
        return line
    unranked = unranked_sources(spec)[source]
    return (f"{line}; the target planned by nnU-Net with the study's plans "
            f"{plans_of_source(spec)} ({spec.configuration}), its network the encoder's "
            f"{nnssl.name} ({nnssl.network_class.rsplit('.', 1)[-1]}), as the plans "
            f"{transferred_plans(spec, source)}; runs load the encoder only "
            f"(NNUNET_TRANSFER_LOAD=encoder); not ranked: {unranked}")


def _cmd_check(args):
    spec = load_study(args.study)
    print(f"{args.study}: no mistakes found. {check_summary(spec)}")


def run_and_print(study_file: str) -> str:
    from nnunet_transfer.study.runner import run_study
    report = run_study(load_with_environment(study_file))
    print(f"report: {report}\n       {os.path.splitext(report)[0]}.md")
    return report


def _cmd_run(args):
    run_and_print(args.study)


def _cmd_status(args):
    from nnunet_transfer.study.runner import study_status
    print(study_status(load_study(args.study)))


def _cmd_report(args):
    from nnunet_transfer.study.results import report_only
    print(f"report: {report_only(load_with_environment(args.study))}")


def _cmd_example(args):
    print(example_study(), end="")


def _cmd_demo(args):
    run_and_print(write_demo_study(args.workdir, epochs=args.epochs, iters=args.iters,
                                   jobs=args.jobs, hippocampus=args.hippocampus))


def register(subparsers) -> None:
    """Add `study` with its commands to the `nnunet-transfer` subparsers."""
    study = subparsers.add_parser(
        "study", help="run a whole transfer-learning study from one YAML file",
        description="A study file describes datasets, strategies, sizes, seeds, architectures, "
                    "budgets and analyses (`nnunet-transfer study example` prints one). `run` "
                    "trains, predicts, evaluates and analyses everything and writes "
                    "report.html; killing it and running it again continues where it stopped.")
    sub = study.add_subparsers(dest="study_command", required=True)
    for name, func, text in (
            ("check", _cmd_check, "check the study file (every mistake, with its line)"),
            ("run", _cmd_run, "run the study (or continue it) and write the report"),
            ("status", _cmd_status, "what is done, running, failed and left, time left"),
            ("report", _cmd_report, "write the report of what is finished now")):
        add_command(sub, name, func, help=text, description=text).add_argument(
            "study", help="the study file (YAML)")
    add_command(sub, "example", _cmd_example, help="print an example study file")


def register_examples(subparsers) -> None:
    """Add `demo` (the embedded study on synthetic data or Hippocampus) to the subparsers."""
    demo = add_command(
        subparsers, "demo", _cmd_demo,
        help="run a small real transfer study on CPU (synthetic data, or Hippocampus)",
        description="Writes <workdir>/study.yaml and runs it like `study run`: pretraining, six "
                    "strategies x 2 seeds on a low-quality target, predictions, evaluation, "
                    "analyses, report.html. Re-running continues an interrupted demo.")
    demo.add_argument("--workdir", default="nnunet_transfer_demo",
                      help="folder for the datasets, runs and report (default "
                           "./nnunet_transfer_demo)")
    demo.add_argument("--hippocampus", default=None, metavar="TASK04_FOLDER",
                      help="run on MSD Task04 Hippocampus instead of synthetic data: the source is "
                           "most cases, the target a low-quality-site copy of 11 others")
    demo.add_argument("--epochs", type=positive_int, default=8,
                      help="epochs of each run on the target (the source gets twice as many)")
    demo.add_argument("--iters", type=positive_int, default=25, help="iterations per epoch")
    demo.add_argument("--jobs", type=positive_int, default=2,
                      help="runs at a time (each gets cores / jobs threads)")
