"""The error every user-fixable problem derives from: the command line prints its message on one line and exits 2."""


class UserError(Exception):
    """A problem with what the user gave (a file, a folder, an address), not with the program."""
