"""The search benchmark: measure every candidate of a space once (the ground truth), then replay
samplers against it and report the hypervolume fraction each reaches after k measured trials."""
