"""Consumer side of the live topic: rebuild order books from OptionStream records."""
