"""The report stage, once across the units: OUT/report.md, OUT/report.html and OUT/figures
(`randsae.study.report`)."""

from randsae.study.records import Stage, StudyState


def run(study: StudyState, _: str) -> None:
    from randsae.study.report import write_report

    write_report(study.out)


STAGE = Stage("report", run, reads=("compare",), per_unit=False)
