"""Evaluations: bundled prompt sets (:mod:`.prompts`), HumanEval pass@1 and GSM8K exact match per
decoding mode (``trimode eval``)."""
