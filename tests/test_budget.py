import pytest

from nnunet_transfer.errors import UserError
from nnunet_transfer.training.budget import Budget


def test_reads_knobs_from_environment():
    budget = Budget.from_environment({
        "NNUNET_TRANSFER_EPOCHS": "7", "NNUNET_TRANSFER_ITERS": "11",
        "NNUNET_TRANSFER_LR": "0.003", "NNUNET_TRANSFER_SNAPSHOT_EVERY": "0",
        "NNUNET_TRANSFER_SEED": "42", "NNUNET_TRANSFER_LOAD": "encoder"})
    assert (budget.epochs, budget.iters, budget.lr, budget.snapshot_every, budget.seed,
            budget.load) == (7, 11, 0.003, 0, 42, "encoder")
    assert budget.val_iters is None and budget.head == "auto"


def test_missing_seed_is_drawn_and_recorded():
    seeds = {Budget.from_environment({}).seed for _ in range(5)}
    assert all(isinstance(s, int) for s in seeds) and len(seeds) > 1


@pytest.mark.parametrize("variable, value, words", [
    ("NNUNET_TRANSFER_EPOCHS", "ten", "is not a number"),
    ("NNUNET_TRANSFER_EPOCHS", "0", "is not a whole number >= 1"),
    ("NNUNET_TRANSFER_EPOCHS", "2.5", "is not a whole number >= 1"),
    ("NNUNET_TRANSFER_LR", "-0.1", "is not a number > 0"),
    ("NNUNET_TRANSFER_LOAD", "decoder", "is not known (did you mean encoder?); choose from all, encoder"),
])
def test_bad_values_name_the_variable_and_the_fix(variable, value, words):
    with pytest.raises(UserError) as error:
        Budget.from_environment({variable: value})
    assert variable in str(error.value) and words in str(error.value)
    assert f"unset {variable}" in str(error.value)


def test_environment_gives_the_trainer_the_same_budget():
    budget = Budget(epochs=7, iters=11, val_iters=3, lr=0.003, snapshot_every=0, seed=42,
                    load="encoder", head="reinit", cpu_threads=2)
    assert Budget.from_environment(budget.environment()) == budget
    assert Budget(epochs=7, iters=11).environment(("epochs", "iters", "seed")) == {
        "NNUNET_TRANSFER_EPOCHS": "7", "NNUNET_TRANSFER_ITERS": "11"}
