"""Models: the specs a suite names, where weights come from, the text encoder, the machine cache."""
