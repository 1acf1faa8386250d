"""Result tables: what their columns mean and how a row is read."""


def judge_at_chance(row: dict, metric: str) -> bool:
    """Is the judge at chance on the scorer of `metric` (auroc_<scorer>) in this comparison row? Each scorer
    has its own flag (judge_at_chance_<scorer>); a table written before those existed has only the row's."""
    scorer = metric.removeprefix("auroc_")
    flag = row.get(f"judge_at_chance_{scorer}", row.get("judge_at_chance"))
    return str(flag) == "True"
