"""Story topics the benchmarks build their prompts from (one fresh prompt a round)."""

TOPICS = [
    "dragons",
    "the sea",
    "a lighthouse keeper",
    "a robot gardener",
    "mountains",
    "a train journey",
    "a lost cat",
    "the moon",
    "a bakery",
    "winter",
    "a violin",
    "a desert town",
]
