"""The paper's experiments, each a function from a config to a results table."""
