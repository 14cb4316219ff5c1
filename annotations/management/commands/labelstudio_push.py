from ._labelstudio import LabelStudioCommand


class Command(LabelStudioCommand):
    help = ("Push the project to Label Studio (config.labelstudio): create or update its Label Studio project and "
            "labelling config, import new ready clips as tasks with signed media links, renew the links of the "
            "others, and send new predictions as pre-annotations. Prints `<status> <what>: <reason>` per line and "
            "a summary on stderr; exits 1 when something failed. Safe to re-run.")
    step = "push"
