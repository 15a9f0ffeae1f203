"""The Optuna study: sampling candidates, running trials in isolation, the front and the pick."""
