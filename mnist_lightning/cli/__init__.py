"""What the command-line verbs share: building objects from the config with one-line errors, reading and
quoting override strings, expanding a resume before Hydra starts, and the end-of-sweep report."""
