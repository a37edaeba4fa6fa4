"""Progress of the phase under way (upload bytes, the job's separation, download bytes) on
stderr: a rich bar on a terminal; elsewhere (a log, CI, a pipe) plain lines without control
characters, one per meaningful change: a phase's start, each further tenth of it, its end, a new
status word. Several songs (a batch) are followed together: a bar each (``start_songs``,
``update_song``), or each song's plain lines, throttled alike."""

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as Bar

BYTES, PERCENT = "bytes", "percent"


class Progress:
    """One phase at a time: ``start`` it, ``update`` it as it goes, ``stop`` it; ``say`` a
    line between phases. ``console``: where it goes (default: stderr, a bar if a terminal)."""

    def __init__(self, quiet: bool, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console if console is not None else Console(stderr=True)
        self.tty = self.console.is_terminal
        self._bar: Bar | None = None
        self._task: TaskID | None = None
        self._last_line: str | None = None
        self._description = ""
        self._total: float | None = None
        self._unit = BYTES
        self._done = 0.0
        self._open = False  # a phase started and not yet stopped
        # What the last plain line told: the phase's tenth (or mebibyte) and its description.
        self._step: int | None = None
        self._told: str | None = None
        # A batch's songs: a task each on the bar, or what each one's plain line last told.
        self._song_tasks: list[TaskID] = []
        self._song_names: list[str] = []
        self._song_told: list[tuple[int, str] | None] = []

    def start(self, description: str, total: float | None, unit: str = BYTES) -> None:
        self.stop()
        self._description, self._total, self._unit = description, total, unit
        self._done, self._step, self._told = 0.0, None, None
        self._open = True
        if self.quiet:
            return
        if self.tty:
            self._bar = Bar(*self._columns(unit), console=self.console, transient=False)
            self._bar.start()
            self._task = self._bar.add_task(description, total=total)
        else:
            self._plain(0.0)

    def update(self, completed: float, description: str | None = None) -> None:
        self._done = completed
        if description is not None:
            self._description = description
        if self.quiet:
            return
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=completed, description=self._description)
        elif not self.tty:
            self._plain(completed)

    def say(self, line: str) -> None:
        """A line of its own, above a bar on a terminal; never the same line twice in a row."""
        if self.quiet or line == self._last_line:
            return
        self._last_line = line
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            self.console.file.write(line + "\n")
            self.console.file.flush()

    def start_songs(self, names: list[str]) -> None:
        """A bar per song (0-100), each described by ``names[i]`` and the job's status word."""
        self.stop()
        self._open = True
        self._unit, self._total = PERCENT, 100
        self._song_names = list(names)
        self._song_told = [None] * len(names)
        if self.quiet:
            return
        if self.tty:
            self._bar = Bar(*self._columns(PERCENT), console=self.console, transient=False)
            self._bar.start()
            self._song_tasks = [self._bar.add_task(f"{name}: pending", total=100) for name in names]
        else:
            for index in range(len(names)):
                self.update_song(index, 0, "pending")

    def update_song(self, index: int, percent: float, word: str) -> None:
        """Song ``index``'s job: its progress and status word. A plain line when it reaches a
        further tenth or its word changes."""
        if self.quiet or index >= len(self._song_names):
            return
        description = f"{self._song_names[index]}: {word}"
        if self._bar is not None and index < len(self._song_tasks):
            self._bar.update(self._song_tasks[index], completed=percent, description=description)
            return
        if self.tty:
            return
        told = (int(min(max(percent, 0), 100) // 10), word)
        if told == self._song_told[index]:
            return
        self._song_told[index] = told
        self.say(f"{description} {int(percent)}%")

    def stop(self) -> None:
        self._song_tasks, self._song_names, self._song_told = [], [], []
        if self._bar is not None:
            self._bar.stop()
            self._bar, self._task = None, None
        elif self._open and not self.quiet and not self._total and self._unit == BYTES:
            # Of an unknown size, the lines come by the mebibyte: the last tells the whole.
            self.say(f"{self._description}: {decimal(int(self._done))}")
        self._open = False

    @staticmethod
    def _columns(unit: str) -> list[ProgressColumn]:
        columns: list[ProgressColumn] = [
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
        ]
        if unit == BYTES:
            return [*columns, DownloadColumn(), TransferSpeedColumn()]
        return [*columns, TimeRemainingColumn()]

    def _plain(self, completed: float) -> None:
        """A line when the phase reaches a further tenth (or, of an unknown size, a further
        mebibyte), or its description changes: throttled by amount, so that a fast transfer
        and a slow one tell as much, and a log holds about a dozen lines a phase."""
        total = self._total
        if total:
            fraction = min(max(completed / total, 0.0), 1.0)
            step, percent = int(fraction * 10), f"{int(fraction * 100)}%"
            if self._unit == BYTES:
                line = f"{self._description}: {percent} ({decimal(int(completed))} of "
                line += f"{decimal(int(total))})"
            else:
                line = f"{self._description} {percent}"
        else:
            step = int(completed) // (1024 * 1024)
            line = f"{self._description}: {decimal(int(completed))}"
        if step == self._step and self._description == self._told:
            return
        self._step, self._told = step, self._description
        self.say(line)
