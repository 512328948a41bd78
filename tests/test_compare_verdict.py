"""compare's verdict ("which trainer wins on what") on hand-made result tables: the better direction of each
quantity, ties, NaN (not measured) and a trainer that wins nothing."""
import math

from nnunet_equivariant.evaluation.compare_report import _verdict

NAN = math.nan


def _row(model, **values):
    return {"model": model, **values}


def _line(lines, what):
    found = [line for line in lines if line.startswith(f"- **{what}**")]
    assert len(found) == 1, f"one verdict line for {what!r} in {lines}"
    return found[0]


def test_higher_dice_and_lower_cost_win():
    rows = [_row("stock", cv_dice_foreground=0.80, worst_drop=0.20, parameters=16_500_000, epoch_s=10.0),
            _row("e3nn", cv_dice_foreground=0.85, worst_drop=0.01, parameters=590_000, epoch_s=70.0)]
    lines = _verdict(rows)
    assert _line(lines, "cross-validation foreground Dice") == \
        "- **cross-validation foreground Dice** (higher is better): **e3nn** 0.8500; stock 0.8000"
    assert _line(lines, "worst Dice drop under rotation") == \
        "- **worst Dice drop under rotation** (lower is better): **e3nn** 0.0100; stock 0.2000"
    assert _line(lines, "parameters") == "- **parameters** (lower is better): **e3nn** 590,000; stock 16,500,000"
    assert _line(lines, "epoch time (s)") == "- **epoch time (s)** (lower is better): **stock** 10; e3nn 70"
    assert len(lines) == 4, "quantities nobody measured get no line"


def test_a_tie_names_every_tied_trainer_whatever_the_order():
    for order in (["a", "b", "c"], ["c", "b", "a"]):
        dice = {"a": 0.9, "b": 0.9, "c": 0.7}
        line = _line(_verdict([_row(m, test_dice_0deg=dice[m]) for m in order]), "test foreground Dice at 0 deg")
        first, second = [m for m in order if m != "c"]
        assert line == (f"- **test foreground Dice at 0 deg** (higher is better): **{first}** and **{second}** "
                        "(tie) 0.9000; c 0.7000")
    # equal as shown (4 decimals) is a tie too: the report never crowns a winner the reader cannot see
    line = _line(_verdict([_row("a", worst_drop=0.01231), _row("b", worst_drop=0.01234)]),
                 "worst Dice drop under rotation")
    assert "**a** and **b** (tie) 0.0123" in line


def test_nan_is_not_measured_not_a_winner():
    rows = [_row("stock", test_dice_min=NAN, train_step_s=2.0),
            _row("mirror", test_dice_min=0.6, train_step_s=NAN),
            _row("e3nn", test_dice_min=0.5, train_step_s=NAN)]
    lines = _verdict(rows)
    assert _line(lines, "lowest test foreground Dice over the rotations") == \
        "- **lowest test foreground Dice over the rotations** (higher is better): **mirror** 0.6000; e3nn 0.5000"
    assert _line(lines, "train step (s)") == "- **train step (s)** (lower is better): **stock** 2"
    all_nan = _verdict([_row("stock", cv_dice_foreground=NAN), _row("e3nn", cv_dice_foreground=NAN)])
    assert all_nan == [], "a quantity measured for no trainer gets no line"


def test_a_trainer_that_wins_nothing_is_only_listed_among_the_others():
    rows = [_row("stock", cv_dice_foreground=0.8, predict_s_per_case=1.0),
            _row("loser", cv_dice_foreground=0.7, predict_s_per_case=3.0),
            _row("e3nn", cv_dice_foreground=0.9, predict_s_per_case=2.0)]
    lines = _verdict(rows)
    assert not any("**loser**" in line for line in lines)
    assert all("loser " in line for line in lines), "its values are still shown"
    assert _line(lines, "predict time per case (s)").startswith("- **predict time per case (s)** (lower is "
                                                               "better): **stock** 1;")
