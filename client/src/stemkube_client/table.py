"""``stemkube list``'s table: columns as wide as their widest cell, so a value never runs into
the next column (rich lays it out)."""

import datetime
from collections.abc import Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

# Wide enough for any row: piped output keeps one line per job, whatever its file name.
UNBOUNDED = 1_000_000
FILENAME_MIN = 8


def when(value: str | None) -> str:
    """An API time as ``2026-11-28 15:31:07Z``: UTC to the second (the API's stamps carry
    microseconds, which only order jobs)."""
    if not value:
        return "-"
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def job_table(jobs: Sequence[dict[str, Any]]) -> Table:
    # Admin keys see each job's tenant (user keys: null, their own): a column only then.
    tenants = any(job.get("tenant") for job in jobs)
    heads = ["JOB ID", "STATUS", "PROGRESS", "CREATED"] + (["TENANT"] if tenants else [])
    rows = []
    for job in jobs:
        cells = [
            str(job["job_id"]),
            str(job["status"]),
            f"{job['progress']}%",
            when(job.get("created_at")),
        ]
        if tenants:
            cells.append(str(job.get("tenant") or "-"))
        rows.append([*cells, str(job["filename"])])
    table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1), header_style="bold")
    for index, head in enumerate(heads):
        # As wide as the widest cell, never cut: a job id is copied from here.
        widest = max([cell_len(head)] + [cell_len(row[index]) for row in rows])
        justify: JustifyMethod = "right" if head == "PROGRESS" else "left"
        table.add_column(head, justify=justify, no_wrap=True, min_width=widest)
    # On a narrow terminal the file name folds onto more lines rather than push the rest.
    table.add_column("FILENAME", overflow="fold", min_width=FILENAME_MIN)
    for row in rows:
        # Cells are text, never markup: a file may be called "[bold]".
        table.add_row(*(Text(cell) for cell in row))
    return table


def print_jobs(jobs: Sequence[dict[str, Any]], console: Console) -> None:
    """The table on ``console``: fitted to a terminal; elsewhere (a pipe, a file) one line per
    job at its natural width, plain text, no trailing blanks."""
    table = job_table(jobs)
    if console.is_terminal:
        # Never narrower than the columns that do not fold: on a terminal too narrow for
        # them, its lines wrap rather than the ids be cut.
        least = console.measure(table, options=console.options.update_width(UNBOUNDED)).minimum
        if least > console.width:  # print() caps a width at the console's own
            console = Console(
                file=console.file,
                width=least,
                force_terminal=True,
                color_system=console.color_system,  # type: ignore[arg-type]
            )
        console.print(table)
        return
    wide = Console(width=UNBOUNDED, color_system=None, force_terminal=False)
    with wide.capture() as captured:
        wide.print(table)
    for line in captured.get().splitlines():
        console.file.write(line.rstrip() + "\n")
    console.file.flush()
