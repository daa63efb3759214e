"""`nnunet-transfer study {check,run,status,report,example}`."""

from __future__ import annotations

import os

from nnunet_transfer.study.spec import StudySpec
from nnunet_transfer.study.study_file import load_study


def load_with_environment(study_file: str) -> StudySpec:
    spec = load_study(study_file)
    # In-process steps (splits, evaluation, report) read nnU-Net's folders from the environment.
    for kind, folder in spec.nnunet.items():
        os.environ[f"nnUNet_{kind}"] = folder
    return spec


def _cmd_check(args):
    spec = load_study(args.study)
    print(f"{args.study}: no mistakes found. Study {spec.name}: strategies "
          f"{', '.join(s.name for s in spec.strategies)}; sizes {list(spec.sizes)}; "
          f"seeds {list(spec.seeds)}; "
          f"architectures {', '.join(spec.architectures)}; analyses {', '.join(spec.analyses)}; "
          f"executor {spec.executor.kind} x {spec.executor.jobs}; files under {spec.workdir}")


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
    from nnunet_transfer.study.demo import example_study
    print(example_study(), end="")


def register(subparsers) -> None:
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
        parser = sub.add_parser(name, help=text, description=text)
        parser.add_argument("study", help="the study file (YAML)")
        parser.set_defaults(func=func)
    sub.add_parser("example", help="print an example study file"
                   ).set_defaults(func=_cmd_example)
