"""The one home of what stemkube's parts agree on: the SeparationJob's coordinates, labels and
phases (``resource``), the separator's exit codes and what each means (``exitcodes``), the
separation options (``options``), the models a deployment serves (``models``), object keys
(``keys``) and time stamps (``timefmt``). Standard library only; imports no component."""
