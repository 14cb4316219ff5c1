from ._labelstudio import LabelStudioCommand


class Command(LabelStudioCommand):
    help = ("Pull the Label Studio project's annotations in as submitted annotations of their authors, found by "
            "email among the project's members (no account is ever created). Prints `<status> <what>: <reason>` "
            "per line and a summary on stderr; exits 1 when something failed. Safe to re-run: nothing is "
            "imported twice.")
    step = "pull"
