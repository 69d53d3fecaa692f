"""The command line's handlers, one module per family of sub-commands, each imported only when its command runs
(so that ``oba --help`` and ``oba list`` never wait for torch). Every handler takes the parsed arguments and
returns the exit code; :mod:`oba.cli` holds the parser and the table of handlers."""
