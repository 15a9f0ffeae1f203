"""The search space and the rules that say which candidates a target can run."""
