"""The package keeps its layer order (scripts/check_layering.py) and has no import circles;
and the check really finds an up-import, a circle and an uncovered module in small fake trees."""

import textwrap

from support.script_modules import LAYERS, check_layering, layer_of


def test_the_package_keeps_its_layers():
    report = check_layering()
    assert "nnunet_transfer.cli" in report.modules
    assert "nnunet_transfer_trainers.nnUNetTrainer_transfer" in report.modules
    assert report.up_imports == (), "\n".join(map(str, report.up_imports))
    assert report.cycles == (), "\n".join(map(str, report.cycles))
    assert report.uncovered == (), ", ".join(report.uncovered)


def _tree(root, files: dict[str, str]) -> str:
    for path, text in {"nnunet_transfer/__init__.py": "", **files}.items():
        file = root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(textwrap.dedent(text))
    return str(root)


def test_an_import_up_the_layers_is_found_even_inside_a_function(tmp_path):
    root = _tree(tmp_path, {
        "nnunet_transfer/errors.py": """
            def late():
                from nnunet_transfer.study import runner
            """,
        "nnunet_transfer/study/__init__.py": "",
        "nnunet_transfer/study/runner.py": "from nnunet_transfer.errors import late\n",
        "nnunet_transfer/cli.py": "import nnunet_transfer.study.runner\n",
    })
    report = check_layering(root)
    assert [(i.importer, i.imported, i.line) for i in report.up_imports] == [
        ("nnunet_transfer.errors", "nnunet_transfer.study.runner", 3)]
    assert report.up_imports[0].path == "nnunet_transfer/errors.py"
    assert not report.ok


def test_a_circle_through_relative_and_late_imports_is_found(tmp_path):
    root = _tree(tmp_path, {
        "nnunet_transfer/data/__init__.py": "",
        "nnunet_transfer/data/a.py": """
            from ..errors import UserError
            def convert():
                from . import b
            """,
        "nnunet_transfer/data/b.py": "from nnunet_transfer.data.c import step\n",
        "nnunet_transfer/data/c.py": "from .a import convert\n",
        "nnunet_transfer/errors.py": "class UserError(Exception): pass\n",
    })
    report = check_layering(root)
    assert [c.modules for c in report.cycles] == [
        ("nnunet_transfer.data.a", "nnunet_transfer.data.b", "nnunet_transfer.data.c")]
    assert len(report.cycles[0].imports) == 3
    assert report.up_imports == () and report.uncovered == ()


def test_packages_cover_new_modules_and_absent_names_are_no_mistake(tmp_path):
    root = _tree(tmp_path, {
        "nnunet_transfer/analysis/__init__.py": "",
        "nnunet_transfer/analysis/brand_new.py": "from nnunet_transfer import errors\n",
        "nnunet_transfer/errors.py": "",
        "nnunet_transfer/gadgets.py": "",
    })
    report = check_layering(root)   # `document`, `study`, ... do not exist here
    assert report.uncovered == ("nnunet_transfer.gadgets",)
    assert report.up_imports == () and report.cycles == ()


def test_trainers_sit_on_top(tmp_path):
    root = _tree(tmp_path, {
        "trainers/__init__.py": "",
        "trainers/nnUNetTrainer_x.py": "from nnunet_transfer import cli\nimport nnUNetTrainer_y\n",
        "trainers/nnUNetTrainer_y.py": "",
        "nnunet_transfer/cli.py": "",
        "nnunet_transfer/training/__init__.py": "",
        "nnunet_transfer/training/trainer.py": "import nnunet_transfer_trainers.nnUNetTrainer_y\n",
    })
    report = check_layering(root)
    assert [(i.importer, i.imported) for i in report.up_imports] == [
        ("nnunet_transfer.training.trainer", "nnunet_transfer_trainers.nnUNetTrainer_y")]
    assert layer_of("nnunet_transfer_trainers.nnUNetTrainer_x") == len(LAYERS)
    assert layer_of("nnunet_transfer.document.tables") == 0
    assert layer_of("nnunet_transfer") == 0 and layer_of("numpy") is None
